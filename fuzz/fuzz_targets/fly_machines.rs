//! The Machines API list decoder and the conversion to the core view: never panics.
#![no_main]

use std::sync::OnceLock;

use fleetscale_fly::{ClientConfig, FlyMachine, FlyScaler, FlyScalerConfig, MachinesClient};
use libfuzzer_sys::fuzz_target;

fn scaler() -> &'static FlyScaler {
    static S: OnceLock<FlyScaler> = OnceLock::new();
    S.get_or_init(|| {
        FlyScaler::new(
            MachinesClient::new(None, ClientConfig::default()).expect("client"),
            FlyScalerConfig::new("my-app"),
        )
        .expect("scaler")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ms) = serde_json::from_slice::<Vec<FlyMachine>>(data) {
        for m in &ms {
            let core = scaler().to_core(m);
            assert_eq!(core.id.as_str(), m.id);
            let _ = m.config_view();
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = fleetscale_fly::parse_rfc3339(s);
        let _ = fleetscale_fly::parse_http_date(s);
    }
});
