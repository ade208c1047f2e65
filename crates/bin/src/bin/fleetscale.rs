//! The `fleetscale` command line (work in progress).
fn main() {
    println!("fleetscale {}", env!("CARGO_PKG_VERSION"));
}
