//! The Weave settings of one autoscaler target: the cluster its machines join as dynamic
//! peers, and how lost members are reclaimed.
//!
//! `fleetscale run` reads it as `[target.weave]` of its TOML file; [`WeaveTargetConfig::membership`]
//! turns it into the [`WeaveMembership`] the engine calls around each action.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::membership::WeaveMembershipConfig;
use crate::{FixedPeer, PeerName, ReclaimConfig, Reclaimer, WeaveError, WeaveMembership};

fn default_router_port() -> u16 {
    6784
}

/// `[target.weave]`: the machines of a target are dynamic peers of a Weave Net cluster.
///
/// ```
/// let w: fleetscale_weave::target::WeaveTargetConfig = serde_json::from_str(
///     r#"{"fixed": [{"name": "00:00:00:00:00:01", "address": "10.0.0.1", "api_url": "http://10.0.0.1:6784"}]}"#,
/// ).unwrap();
/// assert_eq!(w.router_port, 6784);
/// assert!(w.membership("web").is_ok());
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeaveTargetConfig {
    /// The fixed peers: `{ name = "…", address = "…", api_url = "http://…:6784" }`.
    pub fixed: Vec<FixedPeer>,
    /// Router API port on dynamic peers' addresses, for `DELETE /peer` on leave.
    #[serde(default = "default_router_port")]
    pub router_port: u16,
    /// The reclaim ledger; with it, lost members can be reclaimed (see
    /// `engine.reclaim_lost_members`).
    #[serde(default)]
    pub ledger: Option<PathBuf>,
    /// The designated reclaimer (default: the first fixed peer).
    #[serde(default)]
    pub designated: Option<PeerName>,
    /// Minimum time a lost member must have been seen unreachable, continuously, before it is
    /// reclaimed (default 60s; see [`ReclaimConfig::min_unreachable`]).
    #[serde(default, with = "humantime_serde")]
    pub min_unreachable: Option<Duration>,
    /// Extra `weave launch` flags of dynamic peers (in the bootstrap script, e.g. EC2 user
    /// data), e.g. `["--http-addr=0.0.0.0:6784"]` so that the router API that `leave` calls is
    /// reachable at the machine's address (Weave binds it to `127.0.0.1:6784` by default).
    #[serde(default)]
    pub launch_args: Vec<String>,
}

impl WeaveTargetConfig {
    /// The membership of target `target`: its machines join and leave as dynamic peers
    /// (router API at `http://<machine address>:<router_port>`), bound to the target under its
    /// own name, with a reclaimer when a ledger is set.
    ///
    /// # Errors
    /// [`WeaveError::Config`] when a ledger is set but no fixed peer can be the designated
    /// reclaimer; the errors of [`Reclaimer::new`] and [`WeaveMembership::new`].
    pub fn membership(&self, target: &str) -> Result<WeaveMembership, WeaveError> {
        let port = self.router_port;
        let mut mc = WeaveMembershipConfig::new(self.fixed.clone())
            .with_inventory_source(format!("fleetscale-target:{target}"));
        mc.launch_args = self.launch_args.clone();
        mc.router_url = Some(Arc::new(move |m: &fleetscale_core::Machine| {
            m.address.as_ref().map(|a| {
                if a.contains(':') {
                    format!("http://[{a}]:{port}")
                } else {
                    format!("http://{a}:{port}")
                }
            })
        }));
        if let Some(ledger) = &self.ledger {
            let designated = self
                .designated
                .or_else(|| self.fixed.first().map(|f| f.name))
                .ok_or_else(|| WeaveError::Config {
                    message: "weave.fixed is empty".into(),
                })?;
            let mut rc = ReclaimConfig::new(self.fixed.clone(), designated, ledger.clone());
            if let Some(d) = self.min_unreachable {
                rc = rc.with_min_unreachable(d);
            }
            mc = mc.with_reclaimer(Arc::new(Reclaimer::new(rc)?));
        }
        WeaveMembership::new(mc)
    }
}
