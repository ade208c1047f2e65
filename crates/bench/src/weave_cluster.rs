//! The emulated Weave cluster the Weave benchmark and soaks run on: peers numbered from 1, the
//! first three of them fixed peers that start primed with the whole address range, the others
//! joining them as observers.

use std::time::Duration;

use fleetscale_weave::fake::{Emulator, FakeError, PeerSpec};
use fleetscale_weave::{FixedPeer, PeerName};

/// The numbers of the fixed peers (nicknamed `fixed1` to `fixed3`).
pub const FIXED_PEERS: [u64; 3] = [1, 2, 3];

/// How long the fixed peers may take to agree on the address range before starting fails
/// (a bound on a failure, not a wait: priming takes milliseconds on the emulator).
const PRIME_DEADLINE: Duration = Duration::from_secs(60);

/// The peer name of peer number `n` (1 to 2⁴⁸ − 1).
///
/// # Panics
/// When `n` is 0 or above the 48 bits of a peer name: a bug in the caller's numbering.
pub fn peer_name(n: u64) -> PeerName {
    PeerName::from_u64(n).unwrap_or_else(|| panic!("peer number {n} is not a peer name"))
}

/// The host address of peer number `n`, `10.77.x.y`: distinct for every `n` below 64,000,
/// never a network (`.0`) address.
pub fn peer_address(n: u64) -> String {
    format!("10.77.{}.{}", n / 250, n % 250 + 1)
}

/// The fixed peers' host addresses, as an observer lists them to join (`$PEERS`).
pub fn fixed_peer_addresses() -> Vec<String> {
    FIXED_PEERS.iter().map(|&n| peer_address(n)).collect()
}

/// Starts the fixed peers on `emu` and primes the address range among them.
pub async fn start_fixed_peers(emu: &Emulator) -> Result<Vec<FixedPeer>, FakeError> {
    let specs = FIXED_PEERS
        .iter()
        .map(|&n| PeerSpec::new(peer_name(n), format!("fixed{n}"), peer_address(n)))
        .collect();
    emu.start_primed(specs, PRIME_DEADLINE).await
}
