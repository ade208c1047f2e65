//! `fleetscale`: the native command line. See `fleetscale --help` and `fleetscale_bin::cli`.

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(fleetscale_bin::cli::main_with_args(args).await);
}
