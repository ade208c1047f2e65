//! App discovery against the fake over loopback HTTP.

mod common;

use std::time::Duration;

use common::{client, eventually, server};
use fleetscale_fly::fake::{FakeConfig, Fault, FaultKind};
use fleetscale_fly::{AppDiscovery, Wildcard};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn wildcard_over_an_org_keeps_the_last_good_list() {
    let srv = server(FakeConfig::instant()).await;
    let fake = srv.fake();
    for name in ["my-app-1", "my-app-2", "my-app", "other", "xmy-app-3"] {
        fake.create_app(name, "acme");
    }
    fake.create_app("my-app-elsewhere", "other-org");
    let d = AppDiscovery::new(client(&srv), "acme", Wildcard::new("my-app-*"));
    assert_eq!(d.current(), None);
    let names = d.refresh().await.unwrap();
    assert_eq!(names, vec!["my-app-1", "my-app-2"]);
    assert_eq!(d.current().unwrap(), names);
    let log = fake.request_log();
    assert!(
        log.iter()
            .any(|r| r.path == "/v1/apps" && r.query == "org_slug=acme"),
        "{log:?}"
    );

    // A failing refresh keeps the last good list.
    fake.inject(
        Fault::new(FaultKind::Status {
            status: 500,
            body: r#"{"error":"boom"}"#.into(),
        })
        .path("/v1/apps"),
    );
    assert!(d.refresh().await.is_err());
    assert_eq!(d.current().unwrap(), vec!["my-app-1", "my-app-2"]);

    // The empty pattern matches every app of the org.
    let all = AppDiscovery::new(client(&srv), "acme", Wildcard::new(""));
    assert_eq!(all.refresh().await.unwrap().len(), 5);
    srv.shutdown().await;
}

#[tokio::test]
async fn background_refresher_publishes_changes_and_stops_on_cancel() {
    let srv = server(FakeConfig::instant()).await;
    let fake = srv.fake().clone();
    fake.create_app("svc-a", "acme");
    let d = AppDiscovery::new(client(&srv), "acme", Wildcard::new("svc-*"));
    let cancel = CancellationToken::new();
    let (rx, task) = d.spawn(Duration::from_millis(50), cancel.clone());
    eventually("first list", || {
        let rx = rx.clone();
        async move { *rx.borrow() == vec!["svc-a".to_string()] }
    })
    .await;
    // Errors in between do not blank the list.
    fake.inject(
        Fault::new(FaultKind::Status {
            status: 503,
            body: "{}".into(),
        })
        .path("/v1/apps")
        .times(20),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*rx.borrow(), vec!["svc-a".to_string()]);
    fake.clear_faults();
    fake.create_app("svc-b", "acme");
    eventually("new app discovered", || {
        let rx = rx.clone();
        async move { rx.borrow().len() == 2 }
    })
    .await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("refresher stops on cancel")
        .unwrap();
    srv.shutdown().await;
}
