//! `TemporalSource` against the fake Temporal frontend (a real gRPC server on loopback speaking
//! the official `WorkflowService` protos): the query and headers it sends, every error class
//! Temporal answers with, retries, deadlines, cancellation, API keys, TLS with a test CA and
//! mutual TLS, and fly-autoscaler's TLS key pair messages.

use std::time::Duration;

use fleetscale_core::{Error, MetricSource, Scope};
use fleetscale_metrics::harness::temporal::ExecutionStatus;
use fleetscale_metrics::harness::{closed_port, FakeTemporal, Fault, TestPki};
use fleetscale_metrics::temporal::{COUNT_PATH, SYSTEM_INFO_PATH};
use fleetscale_metrics::{MetricsError, TemporalConfig, TemporalSource};

mod cancel;
mod mentions;
use mentions::assert_mentions;

const NS: &str = "orders";

fn fake() -> FakeTemporal {
    let f = FakeTemporal::start().expect("fake temporal starts");
    f.add_namespace(NS);
    f
}

fn config(addr: &str) -> TemporalConfig {
    TemporalConfig::new("workflows", addr, NS).with_timeout(Duration::from_secs(5))
}

fn source(cfg: TemporalConfig) -> TemporalSource {
    TemporalSource::new(cfg).expect("valid config")
}

/// A fake whose next calls to `path` fail with `faults`, in order; a source reading it; and the
/// error of that source's first read.
async fn first_read_failing(
    path: &str,
    faults: &[Fault],
) -> (FakeTemporal, TemporalSource, MetricsError) {
    let f = fake();
    for fault in faults {
        f.inject(path, fault.clone());
    }
    let s = source(config(&f.host_port()));
    let e = s.read(&Scope::new("a")).await.unwrap_err();
    (f, s, e)
}

fn config_message(cfg: TemporalConfig) -> String {
    match TemporalSource::new(cfg) {
        Err(MetricsError::Config { message, .. }) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn counts_running_executions_with_fly_autoscalers_query() {
    let f = fake();
    for (id, queue) in [
        ("a1", "app-a"),
        ("a2", "app-a"),
        ("a3", "app-a"),
        ("b1", "app-b"),
    ] {
        f.start_workflow(NS, id, "process_order", queue);
    }
    f.start_workflow(NS, "other", "cleanup", "app-a");
    f.set_status(NS, "a3", ExecutionStatus::Completed);
    f.start_workflow("default", "elsewhere", "process_order", "app-a");

    let s = source(
        config(&f.host_port())
            .with_query("TaskQueue = '$APP_NAME' AND WorkflowType = \"process_order\""),
    );
    assert_eq!(s.collect(&Scope::new("app-a")).await.unwrap(), 2.0);
    assert_eq!(s.collect(&Scope::new("app-b")).await.unwrap(), 1.0);
    assert_eq!(s.collect(&Scope::new("app-c")).await.unwrap(), 0.0);
    // Without a query: every running execution of the namespace.
    let all = source(config(&f.host_port()));
    assert_eq!(all.collect(&Scope::new("app-a")).await.unwrap(), 4.0);

    let counts = f.calls_to(COUNT_PATH);
    assert_eq!(counts.len(), 4);
    let first = &counts[0];
    assert_eq!(first.namespace, NS);
    assert_eq!(
        first.query,
        r#"ExecutionStatus="Running" AND (TaskQueue = 'app-a' AND WorkflowType = "process_order")"#
    );
    assert_eq!(counts[3].query, r#"ExecutionStatus="Running""#);
    assert_eq!(first.namespace_header.as_deref(), Some(NS));
    assert_eq!(first.authorization, None);
    // The deadline travels to the server.
    let timeout = first.grpc_timeout.as_deref().expect("grpc-timeout header");
    assert!(
        timeout.ends_with('m') || timeout.ends_with('u') || timeout.ends_with('n'),
        "{timeout}"
    );
    // GetSystemInfo once per source, before its first count, as the Go SDK's Dial.
    assert_eq!(f.calls_to(SYSTEM_INFO_PATH).len(), 2);
    assert_eq!(f.calls()[0].path, SYSTEM_INFO_PATH);
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_deadline() {
    let f = fake();
    f.start_workflow(NS, "w", "t", "q");
    f.inject(COUNT_PATH, Fault::Unavailable);
    f.inject(COUNT_PATH, Fault::ResourceExhausted);
    let s = source(config(&f.host_port()));
    assert_eq!(s.collect(&Scope::new("a")).await.unwrap(), 1.0);
    assert_eq!(
        f.calls_to(COUNT_PATH).len(),
        3,
        "two failures, then the answer"
    );

    // Out of attempts: the last status is the error, classed retryable for the engine.
    f.inject(COUNT_PATH, Fault::Unavailable);
    f.inject(COUNT_PATH, Fault::ResourceExhausted);
    let two = source(config(&f.host_port()).with_attempts(2));
    let e = two.read(&Scope::new("a")).await.unwrap_err();
    assert_mentions(
        &e,
        &["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED_CAUSE_RPS_LIMIT"],
    );
    let core: Error = e.into();
    assert!(core.is_retryable(), "{core:?}");
}

#[tokio::test]
async fn unavailable_is_an_unavailable_metric() {
    let faults = [Fault::Unavailable, Fault::Unavailable, Fault::Unavailable];
    let (f, _, e) = first_read_failing(COUNT_PATH, &faults).await;
    let e: Error = e.into();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string().contains("Frontend is not healthy yet."),
        "{e}"
    );
    assert_eq!(f.calls_to(COUNT_PATH).len(), 3);
}

#[tokio::test]
async fn a_server_deadline_is_not_retried() {
    let (f, _, e) = first_read_failing(COUNT_PATH, &[Fault::DeadlineExceeded]).await;
    assert!(
        matches!(
            &e,
            MetricsError::Temporal {
                code: "DEADLINE_EXCEEDED",
                ..
            }
        ),
        "{e:?}"
    );
    let core: Error = e.into();
    assert!(matches!(core, Error::Unavailable { .. }), "{core:?}");
    assert_eq!(
        f.calls_to(COUNT_PATH).len(),
        1,
        "the Go SDK does not retry DeadlineExceeded"
    );
}

#[tokio::test]
async fn permission_denied_is_unauthorized_and_not_retried() {
    let (f, _, e) = first_read_failing(COUNT_PATH, &[Fault::PermissionDenied]).await;
    let e: Error = e.into();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert_mentions(
        &e,
        &[
            "PERMISSION_DENIED: Request unauthorized.",
            "reason: no permission for namespace",
        ],
    );
    assert_eq!(f.calls_to(COUNT_PATH).len(), 1);
}

#[tokio::test]
async fn an_unknown_namespace_is_not_found() {
    let f = fake();
    let s = source(TemporalConfig::new("workflows", f.host_port(), "nope"));
    let e = s.read(&Scope::new("a")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "metric `workflows`: temporal CountWorkflowExecutions at http://{} (namespace nope): NOT_FOUND: Namespace nope is not found. (namespace \"nope\" not found)",
            f.host_port()
        )
    );
    let core: Error = e.into();
    assert!(core.is_not_found(), "{core:?}");
    assert!(!core.is_retryable());
}

#[tokio::test]
async fn internal_errors_follow_the_servers_capability() {
    // The fake reports internal_error_differentiation: INTERNAL is final.
    let (f, _, _) = first_read_failing(COUNT_PATH, &[Fault::Internal]).await;
    assert_eq!(f.calls_to(COUNT_PATH).len(), 1);

    // A server without GetSystemInfo (UNIMPLEMENTED is ignored): INTERNAL is retried.
    let old = fake();
    old.system_info_unimplemented(true);
    old.inject(COUNT_PATH, Fault::Internal);
    let s = source(config(&old.host_port()));
    assert_eq!(s.read(&Scope::new("a")).await.unwrap(), 0);
    assert_eq!(old.calls_to(COUNT_PATH).len(), 2);
}

#[tokio::test]
async fn get_system_info_failures_fail_the_read_and_are_asked_again() {
    let (f, s, e) = first_read_failing(SYSTEM_INFO_PATH, &[Fault::PermissionDenied]).await;
    let e: Error = e.into();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("GetSystemInfo"), "{e}");
    assert!(f.calls_to(COUNT_PATH).is_empty());
    // Next tick: asked again, then counted.
    assert_eq!(s.read(&Scope::new("a")).await.unwrap(), 0);
    assert_eq!(f.calls_to(SYSTEM_INFO_PATH).len(), 2);
}

#[tokio::test]
async fn a_slow_server_times_out_at_the_deadline_and_cancels() {
    let f = fake();
    let s = source(config(&f.host_port()).with_timeout(Duration::from_millis(400)));
    // Warm up (GetSystemInfo answered), then make the server slow.
    assert_eq!(s.read(&Scope::new("a")).await.unwrap(), 0);
    f.set_delay(Some(Duration::from_secs(30)));
    let e = s.read(&Scope::new("a")).await.unwrap_err();
    assert!(
        matches!(&e, MetricsError::Timeout { after, .. } if *after == Duration::from_millis(400)),
        "{e:?}"
    );
    let core: Error = e.into();
    assert!(matches!(core, Error::Timeout { .. }), "{core:?}");
    let sent = f.calls_to(COUNT_PATH).pop().unwrap();
    let t = sent.grpc_timeout.expect("grpc-timeout");
    let (n, unit) = t.split_at(t.len() - 1);
    let n: u64 = n.parse().unwrap();
    let sent_ms = match unit {
        "m" => n,
        "u" => n / 1000,
        "n" => n / 1_000_000,
        other => panic!("unit {other}"),
    };
    assert!(sent_ms <= 400, "the server is told about our deadline: {t}");

    // Cancellation: returns Cancelled when the token fires, well before the deadline.
    let slow = source(config(&f.host_port()).with_timeout(Duration::from_secs(60)));
    cancel::cancelled_read(Duration::from_millis(200), async |token| {
        slow.read_with_cancel(&Scope::new("a"), token).await
    })
    .await;

    // The delay injected for one call only.
    f.set_delay(None);
    f.inject(COUNT_PATH, Fault::Delay(Duration::from_secs(30)));
    assert!(s.read(&Scope::new("a")).await.is_err());
    assert_eq!(s.read(&Scope::new("a")).await.unwrap(), 0);
}

#[tokio::test]
async fn a_closed_port_is_unavailable_with_the_connection_error() {
    let port = closed_port().unwrap();
    let s = source(config(&port.to_string()).with_timeout(Duration::from_secs(3)));
    let e = s.read(&Scope::new("a")).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("UNAVAILABLE"), "{text}");
    assert!(text.to_lowercase().contains("connect"), "{text}");
    let core: Error = e.into();
    assert!(core.is_retryable(), "{core:?}");
}

#[tokio::test]
async fn api_keys_are_sent_as_bearer_and_never_shown() {
    let f = fake();
    f.require_api_key(Some("sekret-key-123"));
    let good = source(
        config(&f.host_port())
            .with_api_key("sekret-key-123")
            .with_tls(false),
    );
    assert_eq!(good.read(&Scope::new("a")).await.unwrap(), 0);
    let sent = f.calls_to(COUNT_PATH).pop().unwrap();
    assert_eq!(sent.authorization.as_deref(), Some("Bearer sekret-key-123"));
    assert!(!format!("{good:?}").contains("sekret"));

    let wrong = source(
        config(&f.host_port())
            .with_api_key("wrong-key-456")
            .with_tls(false),
    );
    let e = wrong.read(&Scope::new("a")).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("wrong-key-456"), "{shown}");
    let core: Error = e.into();
    assert!(matches!(core, Error::Unauthorized { .. }), "{core:?}");
    assert!(!format!("{core} {core:?}").contains("wrong-key-456"));
    let none = source(config(&f.host_port()));
    let e: Error = none.read(&Scope::new("a")).await.unwrap_err().into();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
}

#[tokio::test]
async fn a_query_temporal_rejects_is_an_invalid_request_naming_the_query() {
    let f = fake();
    let s = source(config(&f.host_port()).with_query("CustomerTier = 'gold'"));
    let e: Error = s.read(&Scope::new("a")).await.unwrap_err().into();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
    assert_mentions(
        &e,
        &[
            "invalid search attribute: CustomerTier",
            r#"query: ExecutionStatus="Running" AND (CustomerTier = 'gold')"#,
        ],
    );
}

#[tokio::test]
async fn an_environment_value_cannot_unbalance_the_sent_query() {
    let f = fake();
    // SAFETY of the test: a variable name no other test uses.
    std::env::set_var("FLEETSCALE_TEST_TEMPORAL_BREAK", "x') OR ('1'='1");
    let s = source(
        config(&f.host_port())
            .with_query("WorkflowId = '$FLEETSCALE_TEST_TEMPORAL_BREAK'")
            .with_expand_env(true),
    );
    let e = s.read(&Scope::new("a")).await.unwrap_err();
    assert!(
        matches!(&e, MetricsError::Config { message, .. } if message.contains("after expansion")),
        "{e:?}"
    );
    assert!(f.calls_to(COUNT_PATH).is_empty(), "nothing sent");
}

#[tokio::test]
async fn tls_with_a_test_ca() {
    let pki = TestPki::new().unwrap();
    let f = FakeTemporal::start_with(Some(pki.server_tls(false))).unwrap();
    f.start_workflow("default", "w", "t", "q");
    let cfg = |addr: String| {
        TemporalConfig::new("workflows", addr, "default").with_timeout(Duration::from_secs(5))
    };

    let s = source(cfg(f.localhost_port()).with_ca(pki.ca_pem.clone()));
    assert!(
        s.endpoint().starts_with("https://localhost:"),
        "{}",
        s.endpoint()
    );
    assert_eq!(s.read(&Scope::new("a")).await.unwrap(), 1);
    // By IP: the certificate has 127.0.0.1 as an IP SAN.
    let by_ip = source(cfg(f.host_port()).with_ca(pki.ca_pem.clone()));
    assert_eq!(by_ip.read(&Scope::new("a")).await.unwrap(), 1);
    // A server name that the certificate does not carry.
    let wrong_name = source(
        cfg(f.host_port())
            .with_ca(pki.ca_pem.clone())
            .with_server_name("temporal.example"),
    );
    let e = wrong_name.read(&Scope::new("a")).await.unwrap_err();
    assert!(e.to_string().contains("UNAVAILABLE"), "{e}");
    // A CA that did not sign the server certificate.
    let untrusted = source(cfg(f.localhost_port()).with_ca(pki.other_ca_pem.clone()));
    let e = untrusted.read(&Scope::new("a")).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("UNAVAILABLE") && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    // Plaintext against a TLS server fails too.
    let plain = source(cfg(f.localhost_port()));
    assert!(plain.read(&Scope::new("a")).await.is_err());
}

#[tokio::test]
async fn mutual_tls_with_client_certificates() {
    let pki = TestPki::new().unwrap();
    let f = FakeTemporal::start_with(Some(pki.server_tls(true))).unwrap();
    let cfg = || {
        TemporalConfig::new("workflows", f.localhost_port(), "default")
            .with_timeout(Duration::from_secs(5))
            .with_ca(pki.ca_pem.clone())
    };

    let ok =
        source(cfg().with_client_cert(pki.client_cert_pem.clone(), pki.client_key_pem.clone()));
    assert_eq!(ok.read(&Scope::new("a")).await.unwrap(), 0);
    let shown = format!("{ok:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    let anonymous = source(cfg());
    assert!(anonymous.read(&Scope::new("a")).await.is_err());
    let foreign = source(cfg().with_client_cert(
        pki.other_client_cert_pem.clone(),
        pki.other_client_key_pem.clone(),
    ));
    assert!(foreign.read(&Scope::new("a")).await.is_err());
    // GetSystemInfo and one count, both from the authenticated client.
    assert_eq!(
        f.calls().len(),
        2,
        "only the authenticated client got through"
    );
}

#[test]
fn key_pair_errors_use_gos_messages_and_never_show_the_key() {
    let pki = TestPki::new().unwrap();
    let base = || TemporalConfig::new("w", "localhost:7233", "default");
    let key_body: String = pki.client_key_pem.lines().nth(1).unwrap().to_owned();
    let cases: Vec<(TemporalConfig, &str)> = vec![
        (
            base().with_client_cert("", pki.client_key_pem.clone()),
            "tls: failed to find any PEM data in certificate input",
        ),
        (
            base().with_client_cert(pki.client_key_pem.clone(), pki.client_cert_pem.clone()),
            "tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched",
        ),
        (
            base().with_client_cert(pki.client_cert_pem.clone(), ""),
            "tls: failed to find any PEM data in key input",
        ),
        (
            base().with_client_cert(pki.client_cert_pem.clone(), pki.ca_pem.clone()),
            "tls: found a certificate rather than a key in the PEM for the private key",
        ),
        (
            base().with_client_cert(
                pki.client_cert_pem.clone(),
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            "tls: failed to parse private key",
        ),
        (
            base().with_client_cert(pki.client_cert_pem.clone(), pki.other_client_key_pem.clone()),
            "tls: private key does not match public key",
        ),
        (
            base().with_client_cert(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
                pki.client_key_pem.clone(),
            ),
            "tls: failed to find \"CERTIFICATE\" PEM block in certificate input after skipping PEM blocks of the following types: [PUBLIC KEY X509 CRL]",
        ),
    ];
    for (cfg, want) in cases {
        let e = TemporalSource::new(cfg).unwrap_err();
        let MetricsError::Config { message, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(message, want);
        assert!(
            !format!("{e} {e:?}").contains(&key_body),
            "key material in the error"
        );
    }
    // The key alone (no certificate) is the same error as Go's.
    let mut only_key = base();
    only_key.key = Some(pki.client_key_pem.clone().into());
    assert_eq!(
        config_message(only_key),
        "tls: failed to find any PEM data in certificate input"
    );
    // A CA bundle without a certificate.
    assert!(config_message(base().with_ca("not pem")).contains("no CERTIFICATE PEM block"));
    // Files are read when the source is built.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &pki.client_cert_pem).unwrap();
    std::fs::write(&key, &pki.client_key_pem).unwrap();
    let mut files = base();
    files.cert_file = Some(cert);
    files.key_file = Some(key);
    TemporalSource::new(files.clone()).expect("certificate files");
    files.key_file = Some(dir.path().join("missing.pem"));
    assert!(config_message(files).contains("cannot read the key file"));
}
