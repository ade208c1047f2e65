//! fleetscale weave crate (work in progress).
