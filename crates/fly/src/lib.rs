//! fleetscale fly crate (work in progress).
