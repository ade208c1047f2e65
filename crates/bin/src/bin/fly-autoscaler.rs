//! `fly-autoscaler`: fleetscale's drop-in replacement for Fly's Go autoscaler.
//! See `fleetscale_bin::fas`.

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(fleetscale_bin::fas::main_with_args(args).await);
}
