//! The fake's `/metrics` page, in the OpenMetrics text format Fly's own exporter speaks
//! (encoded by `prometheus-client`, so escaping and the `# EOF` terminator follow the spec).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::FakeFly;
use crate::types::FlyState;

/// The content type of [`FakeFly::metrics_text`] (OpenMetrics 1.0 text).
pub(crate) const METRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels Fly puts on `fly_instance_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    app: String,
    region: String,
    instance: String,
}

impl FakeFly {
    /// The `/metrics` page: `fly_instance_up{app,region,instance} 1` per started machine, in
    /// OpenMetrics text (`application/openmetrics-text; version=1.0.0; charset=utf-8`).
    pub fn metrics_text(&self) -> String {
        let instance_up = Family::<InstanceLabels, Gauge>::default();
        {
            let mut g = self.lock();
            g.advance();
            for app in g.apps.values() {
                for m in app.machines.values() {
                    if m.m.state == FlyState::Started {
                        instance_up
                            .get_or_create(&InstanceLabels {
                                app: app.name.clone(),
                                region: m.m.region.clone().unwrap_or_default(),
                                instance: m.m.id.clone(),
                            })
                            .set(1);
                    }
                }
            }
        }
        let mut registry = Registry::default();
        registry.register(
            "fly_instance_up",
            "Whether the instance is up (fleetscale fake)",
            instance_up,
        );
        let mut out = String::new();
        // Writing into a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::FakeConfig;
    use super::*;
    use crate::types::FlyMachine;

    #[test]
    fn only_started_machines_are_up_and_labels_are_escaped() {
        let fake = FakeFly::new(FakeConfig::instant());
        for (id, state) in [("m1", FlyState::Started), ("m2", FlyState::Stopped)] {
            let machine = FlyMachine {
                id: id.into(),
                state,
                region: Some("a\"b\\c".into()),
                ..FlyMachine::default()
            };
            fake.insert_machine("app", machine);
        }
        let text = fake.metrics_text();
        assert!(text.contains("# TYPE fly_instance_up gauge"), "{text}");
        assert!(
            text.contains(r#"fly_instance_up{app="app",region="a\"b\\c",instance="m1"} 1"#),
            "{text}"
        );
        assert!(!text.contains("m2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
