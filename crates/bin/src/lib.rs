//! Shared code of the fleetscale binaries (work in progress).
