//! fleetscale metrics crate (work in progress).
