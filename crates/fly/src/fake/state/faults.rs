//! Injected faults: what a matching request gets instead of (or before) its answer.

use std::time::Duration;

use super::{FakeFly, Inner};

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status with this body (the request is not executed).
    Status {
        /// The HTTP status code answered.
        status: u16,
        /// Body (JSON or not).
        body: String,
    },
    /// Answer 429 with this `Retry-After` header value (`None`: no header).
    RateLimited {
        /// Raw header value: seconds or an HTTP date.
        retry_after: Option<String>,
    },
    /// Delay the request, then execute it normally.
    Latency(Duration),
    /// Never answer (until the server shuts down): the client's timeout must fire.
    Hang,
    /// Answer 200 with a body that is not valid JSON (the request is not executed).
    Malformed,
    /// Send 200 headers, then abort the connection before the body (the request is not
    /// executed). The client sees a transport error.
    DropConnection,
}

/// A fault applied to the next `times` requests matching `method` and `path_contains`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Only this method (`GET`, `POST`, ...), any when `None`.
    pub method: Option<String>,
    /// Only paths containing this, any when `None`.
    pub path_contains: Option<String>,
    /// What a matching request gets instead of (or before) its answer.
    pub kind: FaultKind,
    /// How many matching requests it applies to.
    pub times: u32,
}

impl Fault {
    /// A fault for any request, once.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            method: None,
            path_contains: None,
            kind,
            times: 1,
        }
    }

    /// Only for this method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_ascii_uppercase());
        self
    }

    /// Only for paths containing `p`.
    pub fn path(mut self, p: &str) -> Self {
        self.path_contains = Some(p.to_owned());
        self
    }

    /// For `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
}

impl FakeFly {
    /// Queues `fault`: a request takes the first matching fault, using up one of its `times`.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }
}

impl Inner {
    /// The fault for this request, if any (consumes one use).
    pub(crate) fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let idx = self.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_deref().is_none_or(|m| m == method)
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let f = &mut self.faults[idx];
        f.times -= 1;
        let kind = f.kind.clone();
        if f.times == 0 {
            self.faults.remove(idx);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::super::FakeConfig;
    use super::*;

    #[test]
    fn faults_are_consumed() {
        let fake = FakeFly::new(FakeConfig::instant());
        fake.inject(
            Fault::new(FaultKind::Malformed)
                .method("get")
                .path("/machines")
                .times(2),
        );
        let mut g = fake.lock();
        assert!(g.take_fault("POST", "/v1/apps/a/machines").is_none());
        assert!(g.take_fault("GET", "/v1/apps/a/machines").is_some());
        assert!(g.take_fault("GET", "/v1/apps/a/machines").is_some());
        assert!(g.take_fault("GET", "/v1/apps/a/machines").is_none());
    }
}
