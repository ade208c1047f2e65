//! The fake's `/metrics` page.

use super::FakeFly;
use crate::types::FlyState;

impl FakeFly {
    /// The `/metrics` page: `fly_instance_up{app,region,instance} 1` per started machine.
    pub fn metrics_text(&self) -> String {
        let mut g = self.lock();
        g.advance();
        let mut out = String::from(
            "# HELP fly_instance_up Whether the instance is up (fleetscale fake).\n# TYPE fly_instance_up gauge\n",
        );
        for app in g.apps.values() {
            for m in app.machines.values() {
                if m.m.state == FlyState::Started {
                    out.push_str(&format!(
                        "fly_instance_up{{app=\"{}\",region=\"{}\",instance=\"{}\"}} 1\n",
                        escape_label(&app.name),
                        escape_label(m.m.region.as_deref().unwrap_or("")),
                        escape_label(&m.m.id)
                    ));
                }
            }
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
