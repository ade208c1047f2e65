//! Every Weave router text format, the rmpeer answer, peer names and ledger lines: never
//! panics.
#![no_main]

use fleetscale_weave::client::parse_rmpeer;
use fleetscale_weave::ledger::LedgerEntry;
use fleetscale_weave::status::{parse_connections, parse_ipam, parse_peers, parse_status};
use fleetscale_weave::PeerName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_ipam(text);
    if let Ok(s) = parse_status(text) {
        let _ = s.name();
        let _ = s.ipam_status();
    }
    let _ = parse_peers(text);
    if let Ok(cs) = parse_connections(text) {
        for c in &cs {
            let _ = c.remote();
        }
    }
    let _ = parse_rmpeer(text);
    let _ = text.parse::<PeerName>();
    let _ = serde_json::from_str::<LedgerEntry>(text);
});
