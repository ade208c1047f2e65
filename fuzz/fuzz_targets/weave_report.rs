//! The `/report` JSON decoder: never panics; what decodes can be queried.
#![no_main]

use fleetscale_weave::report::Report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<Report>(data) {
        if let Some(ipam) = &r.ipam {
            let _ = ipam.owners();
            let _ = ipam.owned_by("00:00:00:00:00:05");
        }
    }
});
