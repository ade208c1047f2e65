//! Launch plans: the exact `weave launch` command, `/etc/sysconfig/weave`, the systemd unit
//! and a host bootstrap script, for fixed and dynamic peers.
//!
//! Sources (`weave-net.md` §1.2, §1.3, §1.6):
//! - **Fixed peers** (uniform fixed cluster, `weave:site/operational-guide/uniform-fixed-cluster.md`):
//!   `weave launch --no-restart $PEERS`, where `$PEERS` (from `/etc/sysconfig/weave`) is the
//!   same full list on every peer and may include the peer itself. No `--ipalloc-init`: consensus
//!   is implied and the quorum comes from the peer list. Then `weave prime` on any peer (safe on
//!   several; blocks until a quorum is up).
//! - **Dynamic peers** (`weave:site/operational-guide/autoscaling.md`):
//!   `weave launch --no-restart --ipalloc-init=observer $PEERS`, where `$PEERS` is **only the
//!   fixed cluster**: every fixed peer not explicitly removed, including ones that are down.
//! - **systemd** (`weave:site/install/systemd.md`): the unit below, with
//!   `EnvironmentFile=-/etc/sysconfig/weave` holding `PEERS="HOST1 HOST2 .. HOSTn"` and
//!   optionally `WEAVE_PASSWORD="..."`. For dynamic peers the only change is the observer flag
//!   in `ExecStartPre`.
//!
//! ```
//! use fleetscale_weave::{FixedCluster, LaunchPlan};
//! let cluster = FixedCluster::new(["10.0.0.1", "10.0.0.2", "10.0.0.3"]).unwrap();
//! let plan = LaunchPlan::dynamic(&cluster);
//! assert_eq!(
//!     plan.launch_argv(),
//!     ["weave", "launch", "--no-restart", "--ipalloc-init=observer", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
//! );
//! assert_eq!(plan.sysconfig(), "PEERS=\"10.0.0.1 10.0.0.2 10.0.0.3\"\n");
//! ```

use serde::{Deserialize, Serialize};

use crate::WeaveError;

/// Where the `weave` script is installed, as in the systemd unit of the docs.
pub const WEAVE_PATH: &str = "/usr/local/bin/weave";
/// The environment file the unit reads.
pub const SYSCONFIG_PATH: &str = "/etc/sysconfig/weave";
/// The unit file's path.
pub const UNIT_PATH: &str = "/etc/systemd/system/weave.service";

/// A secret such as the Weave encryption password (`fleetscale_core::Secret`): `Debug`,
/// `Display` and serialised form print `<redacted>`.
pub use fleetscale_core::Secret;

/// The fixed cluster's addresses, as given to `weave launch` (host names or IPs, optionally
/// `:port`), minus the ones explicitly removed.
///
/// A fixed peer that is merely *down* stays in the list: the guides require `$PEERS` to
/// include down members (they come back) and exclude only explicitly removed ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedCluster {
    addresses: Vec<String>,
    removed: Vec<String>,
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '-' | ':' | '_' | '[' | ']' | '/' | '=' | ',')
        })
}

impl FixedCluster {
    /// The fixed cluster with these addresses, in this order.
    ///
    /// # Errors
    /// [`WeaveError::Config`] when the list is empty, has duplicates, or an address has
    /// characters that would need quoting in `/etc/sysconfig/weave` or a unit file.
    pub fn new<I, S>(addresses: I) -> Result<Self, WeaveError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let addresses: Vec<String> = addresses.into_iter().map(Into::into).collect();
        if addresses.is_empty() {
            return Err(WeaveError::config("the fixed cluster has no peers"));
        }
        for (i, a) in addresses.iter().enumerate() {
            if !valid_token(a) || a.contains('=') || a.contains(',') {
                return Err(WeaveError::config(format!(
                    "fixed peer address {a:?} is not a plain host[:port]"
                )));
            }
            if addresses[..i].contains(a) {
                return Err(WeaveError::config(format!("fixed peer {a:?} listed twice")));
            }
        }
        Ok(FixedCluster {
            addresses,
            removed: Vec::new(),
        })
    }

    /// Marks a fixed peer as explicitly removed (after `weave reset` on it): it leaves `$PEERS`.
    pub fn remove(&mut self, address: &str) {
        if self.addresses.iter().any(|a| a == address) && !self.removed.iter().any(|a| a == address)
        {
            self.removed.push(address.to_string());
        }
    }

    /// The `$PEERS` list: every fixed peer not explicitly removed, down ones included.
    pub fn peers(&self) -> Vec<String> {
        self.addresses
            .iter()
            .filter(|a| !self.removed.contains(a))
            .cloned()
            .collect()
    }

    /// Whether `address` is a (not removed) fixed peer.
    pub fn contains(&self, address: &str) -> bool {
        self.peers().iter().any(|a| a == address)
    }
}

/// Fixed (consensus elector) or dynamic (IPAM observer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    /// A member of the fixed cluster.
    Fixed,
    /// A peer started and stopped by the autoscaler: an IPAM observer that joins and leaves.
    Dynamic,
}

/// How one peer is launched. Rendered into an argument list, `/etc/sysconfig/weave`, the
/// systemd unit and a bootstrap script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    role: PeerRole,
    peers: Vec<String>,
    weave: String,
    extra_args: Vec<String>,
    password: Option<Secret>,
    consensus: Option<u32>,
}

impl LaunchPlan {
    /// A fixed peer: `weave launch --no-restart $PEERS` with the whole fixed cluster.
    pub fn fixed(cluster: &FixedCluster) -> Self {
        Self::with_role(PeerRole::Fixed, cluster)
    }

    /// A dynamic peer: `weave launch --no-restart --ipalloc-init=observer $PEERS` with the
    /// fixed cluster only.
    pub fn dynamic(cluster: &FixedCluster) -> Self {
        Self::with_role(PeerRole::Dynamic, cluster)
    }

    fn with_role(role: PeerRole, cluster: &FixedCluster) -> Self {
        LaunchPlan {
            role,
            peers: cluster.peers(),
            weave: "weave".to_string(),
            extra_args: Vec::new(),
            password: None,
            consensus: None,
        }
    }

    /// Whether this plan launches a fixed or a dynamic peer.
    pub fn role(&self) -> PeerRole {
        self.role
    }

    /// The `$PEERS` list.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// The program in [`LaunchPlan::launch_argv`] (default `weave`, found on `PATH`). The unit
    /// and script always use [`WEAVE_PATH`] as in the docs.
    pub fn with_weave_program(mut self, program: impl Into<String>) -> Self {
        self.weave = program.into();
        self
    }

    /// Extra `weave launch` flags (e.g. `--ipalloc-range=10.32.0.0/12`, `--name=::4`), placed
    /// before `$PEERS`.
    ///
    /// # Errors
    /// [`WeaveError::Config`] for a flag that does not start with `-` or needs quoting.
    pub fn with_extra_args<I, S>(mut self, args: I) -> Result<Self, WeaveError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for a in args {
            let a = a.into();
            if !a.starts_with('-') || !valid_token(&a) {
                return Err(WeaveError::config(format!(
                    "launch flag {a:?} must start with `-` and need no quoting"
                )));
            }
            if a.starts_with("--ipalloc-init") {
                return Err(WeaveError::config(
                    "--ipalloc-init is set by the plan's role (observer for dynamic peers)",
                ));
            }
            self.extra_args.push(a);
        }
        Ok(self)
    }

    /// The encryption password, written to `/etc/sysconfig/weave` as `WEAVE_PASSWORD`.
    ///
    /// # Errors
    /// [`WeaveError::Config`] when it contains `"`, `\`, `$`, a backquote or a line break.
    pub fn with_password(mut self, password: Secret) -> Result<Self, WeaveError> {
        if password.is_empty()
            || password
                .expose()
                .chars()
                .any(|c| matches!(c, '"' | '\\' | '$' | '`' | '\n' | '\r'))
        {
            return Err(WeaveError::config(
                "WEAVE_PASSWORD must be non-empty without \", \\, $, ` or line breaks",
            ));
        }
        self.password = Some(password);
        Ok(self)
    }

    /// Opt-in, fixed peers only: `--ipalloc-init=consensus=N` (the fixture cluster was launched
    /// so). The operational guide does **not** use it; without it the quorum comes from the peer
    /// list. Under-counting N can split the cluster into two rings (`weave-net.md` §4.7).
    ///
    /// # Errors
    /// [`WeaveError::Config`] for a dynamic plan or `n == 0`.
    pub fn with_consensus(mut self, n: u32) -> Result<Self, WeaveError> {
        if self.role != PeerRole::Fixed || n == 0 {
            return Err(WeaveError::config(
                "consensus=N applies to fixed peers only, with N >= 1",
            ));
        }
        self.consensus = Some(n);
        Ok(self)
    }

    fn flags(&self) -> Vec<String> {
        let mut f = vec!["--no-restart".to_string()];
        match (self.role, self.consensus) {
            (PeerRole::Dynamic, _) => f.push("--ipalloc-init=observer".to_string()),
            (PeerRole::Fixed, Some(n)) => f.push(format!("--ipalloc-init=consensus={n}")),
            (PeerRole::Fixed, None) => {}
        }
        f.extend(self.extra_args.iter().cloned());
        f
    }

    /// The exact `weave launch` argument list (program first), `$PEERS` expanded.
    pub fn launch_argv(&self) -> Vec<String> {
        let mut v = vec![self.weave.clone(), "launch".to_string()];
        v.extend(self.flags());
        v.extend(self.peers.iter().cloned());
        v
    }

    /// `weave prime` (fixed peers; blocks until a quorum of the fixed cluster is up).
    pub fn prime_argv(&self) -> Vec<String> {
        vec![self.weave.clone(), "prime".to_string()]
    }

    /// `weave reset` (how a dynamic peer leaves).
    pub fn reset_argv(&self) -> Vec<String> {
        vec![self.weave.clone(), "reset".to_string()]
    }

    /// The contents of `/etc/sysconfig/weave`: `PEERS="HOST1 HOST2 .. HOSTn"` and, when set,
    /// `WEAVE_PASSWORD="..."` (the password is in clear: it is the file's purpose).
    pub fn sysconfig(&self) -> String {
        let mut s = format!("PEERS=\"{}\"\n", self.peers.join(" "));
        if let Some(p) = &self.password {
            s.push_str(&format!("WEAVE_PASSWORD=\"{}\"\n", p.expose()));
        }
        s
    }

    /// The unit file `/etc/systemd/system/weave.service` of `weave:site/install/systemd.md`,
    /// with the role's flags in `ExecStartPre`.
    pub fn systemd_unit(&self) -> String {
        format!(
            "[Unit]\n\
             Description=Weave Network\n\
             Documentation=http://docs.weave.works/weave/latest_release/\n\
             Requires=docker.service\n\
             After=docker.service\n\
             [Service]\n\
             EnvironmentFile=-{SYSCONFIG_PATH}\n\
             ExecStartPre={WEAVE_PATH} launch {} $PEERS\n\
             ExecStart=/usr/bin/docker attach weave\n\
             ExecStop={WEAVE_PATH} stop\n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            self.flags().join(" ")
        )
    }

    /// A POSIX `sh` script that installs the sysconfig file and the unit, enables and starts
    /// the service, and (fixed peers) runs `weave prime`. Run it as root on the host.
    pub fn bootstrap_script(&self) -> String {
        let mut s = String::from("#!/bin/sh\n# Generated by fleetscale-weave.\nset -eu\n");
        s.push_str(&format!(
            "mkdir -p /etc/sysconfig\numask 077\ncat > {SYSCONFIG_PATH} <<'FLEETSCALE_EOF'\n"
        ));
        s.push_str(&self.sysconfig());
        s.push_str("FLEETSCALE_EOF\numask 022\n");
        s.push_str(&format!("cat > {UNIT_PATH} <<'FLEETSCALE_EOF'\n"));
        s.push_str(&self.systemd_unit());
        s.push_str("FLEETSCALE_EOF\n");
        s.push_str("systemctl daemon-reload\nsystemctl enable weave\nsystemctl start weave\n");
        if self.role == PeerRole::Fixed {
            s.push_str("# Forces consensus; blocks until a quorum of the fixed cluster is up.\n");
            s.push_str(&format!("{WEAVE_PATH} prime\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> FixedCluster {
        FixedCluster::new(["192.168.77.1", "192.168.77.2", "192.168.77.3"]).unwrap()
    }

    #[test]
    fn fixed_launch_follows_the_uniform_fixed_cluster_guide() {
        let p = LaunchPlan::fixed(&cluster());
        assert_eq!(
            p.launch_argv(),
            [
                "weave",
                "launch",
                "--no-restart",
                "192.168.77.1",
                "192.168.77.2",
                "192.168.77.3"
            ]
        );
        assert_eq!(p.prime_argv(), ["weave", "prime"]);
        let p = p.with_consensus(3).unwrap();
        assert_eq!(
            p.launch_argv(),
            [
                "weave",
                "launch",
                "--no-restart",
                "--ipalloc-init=consensus=3",
                "192.168.77.1",
                "192.168.77.2",
                "192.168.77.3"
            ]
        );
    }

    #[test]
    fn dynamic_peers_list_fixed_cluster_minus_removed() {
        let mut c = cluster();
        c.remove("192.168.77.2");
        c.remove("not-a-member");
        let p = LaunchPlan::dynamic(&c);
        assert_eq!(
            p.launch_argv(),
            [
                "weave",
                "launch",
                "--no-restart",
                "--ipalloc-init=observer",
                "192.168.77.1",
                "192.168.77.3"
            ]
        );
        assert!(LaunchPlan::dynamic(&c).with_consensus(3).is_err());
        assert_eq!(p.reset_argv(), ["weave", "reset"]);
    }

    /// The unit a peer launched with `flags` gets.
    fn expected_unit(flags: &str) -> String {
        format!(
            "[Unit]
Description=Weave Network
Documentation=http://docs.weave.works/weave/latest_release/
Requires=docker.service
After=docker.service
[Service]
EnvironmentFile=-/etc/sysconfig/weave
ExecStartPre=/usr/local/bin/weave launch {flags} $PEERS
ExecStart=/usr/bin/docker attach weave
ExecStop=/usr/local/bin/weave stop
[Install]
WantedBy=multi-user.target
"
        )
    }

    /// The bootstrap script that installs `sysconfig` and `unit`, then runs `last`.
    fn expected_script(sysconfig: &str, unit: &str, last: &str) -> String {
        format!(
            "#!/bin/sh
# Generated by fleetscale-weave.
set -eu
mkdir -p /etc/sysconfig
umask 077
cat > /etc/sysconfig/weave <<'FLEETSCALE_EOF'
{sysconfig}FLEETSCALE_EOF
umask 022
cat > /etc/systemd/system/weave.service <<'FLEETSCALE_EOF'
{unit}FLEETSCALE_EOF
systemctl daemon-reload
systemctl enable weave
systemctl start weave
{last}"
        )
    }

    #[test]
    fn systemd_unit_snapshot_fixed() {
        assert_eq!(
            LaunchPlan::fixed(&cluster()).systemd_unit(),
            expected_unit("--no-restart")
        );
    }

    #[test]
    fn systemd_unit_snapshot_dynamic() {
        let u = LaunchPlan::dynamic(&cluster()).systemd_unit();
        assert!(u.contains(
            "\nExecStartPre=/usr/local/bin/weave launch --no-restart --ipalloc-init=observer $PEERS\n"
        ));
        assert_eq!(u, expected_unit("--no-restart --ipalloc-init=observer"));
    }

    #[test]
    fn sysconfig_snapshot_and_password_redaction() {
        let p = LaunchPlan::dynamic(&cluster())
            .with_password(Secret::new("wfvAwt7sj"))
            .unwrap();
        assert_eq!(
            p.sysconfig(),
            "PEERS=\"192.168.77.1 192.168.77.2 192.168.77.3\"\nWEAVE_PASSWORD=\"wfvAwt7sj\"\n"
        );
        assert!(!format!("{p:?}").contains("wfvAwt7sj"));
        assert!(LaunchPlan::fixed(&cluster())
            .with_password(Secret::new("a\"b"))
            .is_err());
    }

    #[test]
    fn bootstrap_script_snapshot_fixed() {
        assert_eq!(
            LaunchPlan::fixed(&cluster()).bootstrap_script(),
            expected_script(
                "PEERS=\"192.168.77.1 192.168.77.2 192.168.77.3\"\n",
                &expected_unit("--no-restart"),
                "# Forces consensus; blocks until a quorum of the fixed cluster is up.
/usr/local/bin/weave prime
"
            )
        );
        assert!(!LaunchPlan::dynamic(&cluster())
            .bootstrap_script()
            .contains("prime"));
    }

    /// The script as it goes into EC2 user data for a dynamic peer: `$PEERS` is the fixed
    /// cluster only, minus the explicitly removed peer, with the password; no `weave prime`.
    #[test]
    fn bootstrap_script_snapshot_dynamic() {
        let mut c = cluster();
        c.remove("192.168.77.2");
        let p = LaunchPlan::dynamic(&c)
            .with_password(Secret::new("wfvAwt7sj"))
            .unwrap();
        assert_eq!(
            p.bootstrap_script(),
            expected_script(
                "PEERS=\"192.168.77.1 192.168.77.3\"\nWEAVE_PASSWORD=\"wfvAwt7sj\"\n",
                &expected_unit("--no-restart --ipalloc-init=observer"),
                ""
            )
        );
    }

    #[test]
    fn validation() {
        assert!(FixedCluster::new(Vec::<String>::new()).is_err());
        assert!(FixedCluster::new(["a", "a"]).is_err());
        assert!(FixedCluster::new(["a b"]).is_err());
        assert!(FixedCluster::new(["$(reboot)"]).is_err());
        let p = LaunchPlan::dynamic(&cluster());
        assert!(p
            .clone()
            .with_extra_args(["--ipalloc-init=consensus=2"])
            .is_err());
        assert!(p.clone().with_extra_args(["x"]).is_err());
        let p = p.with_extra_args(["--ipalloc-range=10.32.0.0/12"]).unwrap();
        assert_eq!(p.launch_argv()[4], "--ipalloc-range=10.32.0.0/12");
    }
}
