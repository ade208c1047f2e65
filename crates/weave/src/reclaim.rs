//! The reclaimer (work in progress).

use serde::{Deserialize, Serialize};

/// Why a reclaim was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The peer is a fixed peer.
    Fixed,
}
