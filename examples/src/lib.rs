//! Runnable examples of fleetscale; see the `examples/` folder.
