//! [`RouterClient`]: the Weave router's HTTP control API (`weave-net.md` §3).

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::truncate;
use crate::report::Report;
use crate::status::{
    parse_connections, parse_ipam, parse_peers, parse_status, ConnectionStatus, IpamLine,
    PeerStatus, RouterStatus,
};
use crate::{PeerName, WeaveError};

/// The router's default control API address: the `weave` script's `--http-addr` default
/// `127.0.0.1:6784` (`weave-net.md` §3).
pub const DEFAULT_ROUTER_URL: &str = "http://127.0.0.1:6784";

/// The default per-call timeout. The `weave` script itself uses `curl --connect-timeout 3`
/// with no overall limit; we bound every call except [`RouterClient::prime`], which takes its
/// own deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Characters escaped in a path segment: everything but unreserved characters, so the colons
/// of a peer name travel as `%3A` (Go's `net/http` decodes them before routing).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The answer of `DELETE /peer/{name}` (`weave rmpeer`): `"<n> IPs taken over from <x>\n"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmpeerOutcome {
    /// How many addresses the answering router took over (0 when the peer owned nothing, was
    /// unknown, was itself, or had already been reclaimed).
    pub taken_over: u64,
    /// The `<x>` of the answer: the name as sent.
    pub from: String,
}

/// Parses the body of `DELETE /peer/{name}`.
///
/// ```
/// let o = fleetscale_weave::client::parse_rmpeer("262144 IPs taken over from dyn5\n").unwrap();
/// assert_eq!(o.taken_over, 262144);
/// assert_eq!(o.from, "dyn5");
/// ```
pub fn parse_rmpeer(body: &str) -> Result<RmpeerOutcome, WeaveError> {
    const WHAT: &str = "DELETE /peer/{name}";
    let line = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let err = |m: &str| WeaveError::Parse {
        what: WHAT,
        line_no: 1,
        line: line.to_string(),
        message: m.to_string(),
    };
    let (n, from) = line
        .trim_end()
        .split_once(" IPs taken over from ")
        .ok_or_else(|| err("expected `<n> IPs taken over from <peer>`"))?;
    let taken_over = n.trim().parse().map_err(|_| err("bad IP count"))?;
    Ok(RmpeerOutcome {
        taken_over,
        from: from.to_string(),
    })
}

/// A client of one Weave router's HTTP control API.
///
/// Each peer has its own base URL (default [`DEFAULT_ROUTER_URL`]); every call has a timeout
/// ([`DEFAULT_TIMEOUT`] unless changed with [`RouterClient::with_timeout`]). Cheap to clone.
///
/// # Errors
/// Every method returns [`WeaveError::Http`] when the router cannot be reached,
/// [`WeaveError::Timeout`] when the call exceeds its deadline, [`WeaveError::Status`] for an
/// unexpected HTTP status and [`WeaveError::Parse`]/[`WeaveError::Json`] for a malformed answer.
#[derive(Clone, Debug)]
pub struct RouterClient {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Default for RouterClient {
    /// A client of the local router at [`DEFAULT_ROUTER_URL`].
    fn default() -> Self {
        RouterClient {
            http: default_http(),
            base: DEFAULT_ROUTER_URL.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Refuses a URL this build cannot speak: anything but `http`/`https` with a host, and `https`
/// when the crate is built without its `tls` feature (reqwest would only fail at the first
/// request, long after the configuration was accepted). `expected` is the form the message
/// shows for a wrong scheme or a missing host (`http://host:port`).
pub(crate) fn check_http_url(
    what: &str,
    expected: &str,
    url: &str,
    parsed: &reqwest::Url,
) -> Result<(), WeaveError> {
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(WeaveError::config(format!(
            "{what} {url:?}: expected {expected}"
        )));
    }
    if parsed.scheme() == "https" && !cfg!(feature = "tls") {
        return Err(WeaveError::config(format!(
            "{what} {url:?}: this build of fleetscale-weave has no TLS (its `tls` feature is \
             off); use http:// or build with the `tls` feature"
        )));
    }
    Ok(())
}

fn default_http() -> reqwest::Client {
    // The router API is on loopback or a private network: never through a proxy.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl RouterClient {
    /// A client of the router whose API is at `base_url` (`http://host:port`, no path).
    ///
    /// # Errors
    /// [`WeaveError::Config`] when `base_url` is not an `http://` or `https://` URL of a host
    /// and port alone: a path, query, fragment or credentials would be silently dropped or
    /// mangled by every call (`/report` is appended to the base), so they are refused.
    /// `https://` (a TLS-terminating proxy in front of the router, whose own API is plain
    /// HTTP) needs the crate's `tls` feature, on by default.
    pub fn new(base_url: &str) -> Result<Self, WeaveError> {
        let base = base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| WeaveError::config(format!("router URL {base_url:?}: {e}")))?;
        check_http_url("router URL", "http://host:port", base_url, &parsed)?;
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(WeaveError::config(format!(
                "router URL {base_url:?}: expected http://host:port with no path, query or \
                 credentials (the router's API paths are added to it)"
            )));
        }
        Ok(RouterClient {
            base: base.to_string(),
            ..RouterClient::default()
        })
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses a caller-built `reqwest::Client` (shared pools, TLS settings).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        label: &str,
        timeout: Duration,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), WeaveError> {
        let url = format!("{}{}", self.base, path);
        let operation = format!("{label} on {}", self.base);
        let retry = method == Method::GET;
        let req = build(self.http.request(method, &url).timeout(timeout));
        let send = |req: reqwest::RequestBuilder| async {
            let resp = req.send().await?;
            let status = resp.status();
            let body = resp.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let fut = async {
            // A read (GET) is sent again once when the connection broke before any answer:
            // a router that restarted leaves pooled connections that fail on first use.
            match req.try_clone() {
                Some(again) if retry => match send(req).await {
                    Err(e) if !e.is_timeout() && (e.is_request() || e.is_connect()) => {
                        send(again).await
                    }
                    r => r,
                },
                _ => send(req).await,
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(WeaveError::Timeout {
                operation,
                after: timeout,
            }),
            Ok(Err(e)) if e.is_timeout() => Err(WeaveError::Timeout {
                operation,
                after: timeout,
            }),
            Ok(Err(source)) => Err(WeaveError::Http {
                url: self.base.clone(),
                operation: label.to_string(),
                source,
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    fn unexpected(&self, label: &str, status: StatusCode, body: &str) -> WeaveError {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return WeaveError::NotReady {
                url: self.base.clone(),
                operation: label.to_string(),
                body: truncate(body),
            };
        }
        WeaveError::Status {
            url: self.base.clone(),
            operation: label.to_string(),
            status: status.as_u16(),
            body: truncate(body),
        }
    }

    async fn get_text(&self, path: &str, label: &str) -> Result<String, WeaveError> {
        let (status, body) = self
            .call(Method::GET, path, label, self.timeout, |r| r)
            .await?;
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(self.unexpected(label, status, &body))
        }
    }

    /// `GET /status`: the status text. While the router is not ready it answers 503, which
    /// gives [`WeaveError::NotReady`] (carrying the text).
    pub async fn status_text(&self) -> Result<String, WeaveError> {
        self.get_text("/status", "GET /status").await
    }

    /// `GET /status`, parsed.
    pub async fn status(&self) -> Result<RouterStatus, WeaveError> {
        parse_status(&self.status_text().await?)
    }

    /// Whether the router answers and is ready: `Ok(true)` on 200, `Ok(false)` on 503 (up but
    /// not ready, as `weave:api` `IsReady` treats it); errors when it cannot be reached.
    pub async fn is_ready(&self) -> Result<bool, WeaveError> {
        match self.status_text().await {
            Ok(_) => Ok(true),
            Err(WeaveError::NotReady { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /status/ipam`, raw text.
    pub async fn status_ipam_text(&self) -> Result<String, WeaveError> {
        self.get_text("/status/ipam", "GET /status/ipam").await
    }

    /// `GET /status/ipam`, parsed: one line per peer owning space (empty before consensus).
    pub async fn status_ipam(&self) -> Result<Vec<IpamLine>, WeaveError> {
        parse_ipam(&self.status_ipam_text().await?)
    }

    /// `GET /status/peers`, parsed.
    pub async fn status_peers(&self) -> Result<Vec<PeerStatus>, WeaveError> {
        parse_peers(&self.get_text("/status/peers", "GET /status/peers").await?)
    }

    /// `GET /status/connections`, parsed.
    pub async fn status_connections(&self) -> Result<Vec<ConnectionStatus>, WeaveError> {
        parse_connections(
            &self
                .get_text("/status/connections", "GET /status/connections")
                .await?,
        )
    }

    /// `GET /report` with `Accept: application/json`, decoded tolerantly (see [`Report`]).
    pub async fn report(&self) -> Result<Report, WeaveError> {
        const LABEL: &str = "GET /report";
        let (status, body) = self
            .call(Method::GET, "/report", LABEL, self.timeout, |r| {
                r.header(reqwest::header::ACCEPT, "application/json")
            })
            .await?;
        if status != StatusCode::OK {
            return Err(self.unexpected(LABEL, status, &body));
        }
        serde_json::from_str(&body).map_err(|source| WeaveError::Json {
            context: format!("{LABEL} on {}", self.base),
            source,
        })
    }

    /// `DELETE /peer` (`weave reset` without the local teardown): the router hands all its
    /// ranges to one heir (`weave-net.md` §4.4) and answers 204. Weave's Go client accepts 200
    /// too, so do we.
    ///
    /// The hand-off broadcast is fire-and-forget: callers verify from another peer that the
    /// space moved.
    pub async fn reset(&self) -> Result<(), WeaveError> {
        const LABEL: &str = "DELETE /peer";
        let (status, body) = self
            .call(Method::DELETE, "/peer", LABEL, self.timeout, |r| r)
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            s => Err(self.unexpected(LABEL, s, &body)),
        }
    }

    /// `DELETE /peer/{name}` (`weave rmpeer`): this router takes over every range `name`
    /// owns. Takes a [`PeerName`] only, never a nickname. The name is percent-encoded.
    ///
    /// **Unsafe unless** `name` is dead and this is the only router doing it: the router does
    /// no liveness check (`weave-net.md` §4.5). Use [`crate::Reclaimer`] instead of calling
    /// this directly. Repeating it on the *same* router after the first took effect is
    /// harmless (`0 IPs taken over`, fixtures README step 4).
    pub async fn rmpeer(&self, name: &PeerName) -> Result<RmpeerOutcome, WeaveError> {
        const LABEL: &str = "DELETE /peer/{name}";
        let path = format!("/peer/{}", utf8_percent_encode(&name.to_string(), SEGMENT));
        let (status, body) = self
            .call(Method::DELETE, &path, LABEL, self.timeout, |r| r)
            .await?;
        if status != StatusCode::OK {
            return Err(self.unexpected(LABEL, status, &body));
        }
        if body.trim().is_empty() {
            return Err(WeaveError::IpamDisabled {
                url: self.base.clone(),
            });
        }
        parse_rmpeer(&body)
    }

    /// `POST /connect` with form `peer=a&peer=b[&replace=true]` (`weave connect [--replace]`).
    pub async fn connect(&self, peers: &[String], replace: bool) -> Result<(), WeaveError> {
        let mut form: Vec<(&str, &str)> = peers.iter().map(|p| ("peer", p.as_str())).collect();
        if replace {
            form.push(("replace", "true"));
        }
        self.post_form("/connect", "POST /connect", &form).await
    }

    /// `POST /forget` with form `peer=a&peer=b` (`weave forget`). Takes the **addresses**
    /// given to launch/connect, not peer names (`weave-net.md` §1.2).
    pub async fn forget(&self, peers: &[String]) -> Result<(), WeaveError> {
        let form: Vec<(&str, &str)> = peers.iter().map(|p| ("peer", p.as_str())).collect();
        self.post_form("/forget", "POST /forget", &form).await
    }

    async fn post_form(
        &self,
        path: &str,
        label: &str,
        form: &[(&str, &str)],
    ) -> Result<(), WeaveError> {
        let (status, body) = self
            .call(Method::POST, path, label, self.timeout, |r| r.form(form))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.unexpected(label, status, &body))
        }
    }

    /// `GET /ring` (`weave prime`): blocks until this router has a ring (consensus reached,
    /// or, for an observer, a ring received). It has no timeout of its own, so the caller
    /// gives a deadline; [`WeaveError::Timeout`] means no quorum within it (a partition or
    /// failed peers).
    pub async fn prime(&self, deadline: Duration) -> Result<(), WeaveError> {
        const LABEL: &str = "GET /ring";
        let (status, body) = self
            .call(Method::GET, "/ring", LABEL, deadline, |r| r)
            .await?;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(self.unexpected(LABEL, status, &body))
        }
    }

    /// `POST /ip/{id}`: allocates an address for container `id` in the default subnet and
    /// returns it (`a.b.c.d/len`). Blocks while the router waits for space, so it takes a
    /// deadline.
    pub async fn allocate(&self, id: &str, deadline: Duration) -> Result<String, WeaveError> {
        const LABEL: &str = "POST /ip/{id}";
        let path = format!("/ip/{}", utf8_percent_encode(id, SEGMENT));
        let (status, body) = self
            .call(Method::POST, &path, LABEL, deadline, |r| r)
            .await?;
        if status == StatusCode::OK {
            Ok(body.trim().to_string())
        } else {
            Err(self.unexpected(LABEL, status, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `https://` works with the `tls` feature and is refused at construction without it
    /// (`cargo test -p fleetscale-weave --no-default-features --lib https`, run by
    /// scripts/test.sh), for router and inventory URLs alike.
    #[test]
    fn https_urls_need_the_tls_feature() {
        let router = RouterClient::new("https://weave-proxy:443");
        let inventory =
            crate::inventory::HttpInventory::new("https://inv/hosts", Duration::from_secs(1));
        if cfg!(feature = "tls") {
            router.expect("https router URL with tls");
            inventory.expect("https inventory URL with tls");
        } else {
            for err in [router.err().unwrap(), inventory.err().unwrap()] {
                assert!(matches!(err, WeaveError::Config { .. }), "{err:?}");
                assert!(err.to_string().contains("has no TLS"), "{err}");
            }
        }
        RouterClient::new("http://127.0.0.1:6784").expect("plain http always");
        let err = RouterClient::new("ftp://h:1").err().unwrap();
        assert!(
            err.to_string().contains("expected http://host:port"),
            "{err}"
        );
        let err = crate::inventory::HttpInventory::new("ftp://inv/hosts", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("expected http://host[:port]/path"),
            "{err}"
        );
    }

    #[test]
    fn rmpeer_answers() {
        assert_eq!(
            parse_rmpeer("0 IPs taken over from nosuchpeer\n").unwrap(),
            RmpeerOutcome {
                taken_over: 0,
                from: "nosuchpeer".into()
            }
        );
        assert_eq!(
            parse_rmpeer("5 IPs taken over from 00:00:00:00:00:05\n")
                .unwrap()
                .from,
            "00:00:00:00:00:05"
        );
        match parse_rmpeer("something else\n") {
            Err(WeaveError::Parse { line, .. }) => assert_eq!(line, "something else"),
            other => panic!("{other:?}"),
        }
        assert!(parse_rmpeer("x IPs taken over from a").is_err());
    }

    #[test]
    fn urls() {
        assert!(RouterClient::new("ftp://x").is_err());
        assert!(RouterClient::new("not a url").is_err());
        let c = RouterClient::new("http://10.0.0.1:6784/").unwrap();
        assert_eq!(c.base_url(), "http://10.0.0.1:6784");
        assert_eq!(RouterClient::default().base_url(), DEFAULT_ROUTER_URL);
        let encoded = utf8_percent_encode("00:00:00:00:00:05", SEGMENT).to_string();
        assert_eq!(encoded, "00%3A00%3A00%3A00%3A00%3A05");
    }
}
