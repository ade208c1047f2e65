//! gRPC statuses of the Temporal frontend: which are retried, and what they become.
//!
//! Temporal's service errors (`go.temporal.io/api/serviceerror`) travel as gRPC status codes
//! with a `google.rpc.Status` in `grpc-status-details-bin` whose details name the failure
//! (`temporal.api.errordetails.v1.NamespaceNotFoundFailure`, `PermissionDeniedFailure`,
//! `ResourceExhaustedFailure`, …). We decode the details we know for the message and keep the
//! code for the class.

use prost::Message;
use temporalio_protos::google::rpc::Status as RpcStatus;
use temporalio_protos::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use temporalio_protos::temporal::api::errordetails::v1::{
    NamespaceNotFoundFailure, PermissionDeniedFailure, ResourceExhaustedFailure,
};
use tonic::Code;

use crate::error::truncate;
use crate::MetricsError;

/// Codes the Go SDK retries (`retryableCodes`); `Internal` only while the server does not
/// differentiate internal errors (`retryableCodesWithoutInternal` otherwise).
pub(crate) fn retryable(code: Code, differentiates_internal: bool) -> bool {
    match code {
        Code::Aborted | Code::ResourceExhausted | Code::Unavailable | Code::Unknown => true,
        Code::Internal => !differentiates_internal,
        _ => false,
    }
}

/// gRPC's canonical name of a code (`UNAVAILABLE`, `NOT_FOUND`, …).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error and its sources, joined with `: ` (a transport error says little without them).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

/// What the details of a status say, in words, when we know them.
fn details(status: &tonic::Status) -> Option<String> {
    let bytes = status.details();
    if bytes.is_empty() {
        return None;
    }
    let rpc = RpcStatus::decode(bytes).ok()?;
    let mut out = Vec::new();
    for any in &rpc.details {
        let kind = any.type_url.rsplit('/').next().unwrap_or("");
        match kind {
            "temporal.api.errordetails.v1.NamespaceNotFoundFailure" => {
                if let Ok(d) = NamespaceNotFoundFailure::decode(any.value.as_slice()) {
                    out.push(format!("namespace {:?} not found", d.namespace));
                }
            }
            "temporal.api.errordetails.v1.PermissionDeniedFailure" => {
                if let Ok(d) = PermissionDeniedFailure::decode(any.value.as_slice()) {
                    if !d.reason.is_empty() {
                        out.push(format!("reason: {}", d.reason));
                    }
                }
            }
            "temporal.api.errordetails.v1.ResourceExhaustedFailure" => {
                if let Ok(d) = ResourceExhaustedFailure::decode(any.value.as_slice()) {
                    let cause = ResourceExhaustedCause::try_from(d.cause)
                        .map(|c| c.as_str_name())
                        .unwrap_or("unknown cause");
                    let scope = ResourceExhaustedScope::try_from(d.scope)
                        .map(|s| s.as_str_name())
                        .unwrap_or("unknown scope");
                    out.push(format!("{cause} ({scope})"));
                }
            }
            _ => {}
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// The [`MetricsError`] of a failed gRPC call, with the status's details in words.
pub(crate) fn error(
    metric: &str,
    call: &'static str,
    address: &str,
    namespace: &str,
    query: &str,
    status: tonic::Status,
) -> MetricsError {
    let mut message = if status.message().is_empty() {
        code_name(status.code()).to_lowercase().replace('_', " ")
    } else {
        status.message().to_owned()
    };
    if let Some(cause) = std::error::Error::source(&status) {
        // A transport error's status message repeats a link of its source chain.
        let causes = chain(cause);
        message = if causes.contains(status.message()) {
            causes
        } else {
            format!("{message}: {causes}")
        };
    }
    if let Some(d) = details(&status) {
        message = format!("{message} ({d})");
    }
    if status.code() == Code::InvalidArgument && !query.is_empty() {
        message = format!("{message}; query: {}", truncate(query, 300));
    }
    MetricsError::Temporal {
        metric: metric.to_owned(),
        call: format!("{call} at {address}"),
        namespace: namespace.to_owned(),
        code: code_name(status.code()),
        message: truncate(&message, 600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classes_follow_the_go_sdk() {
        for c in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Unknown,
        ] {
            assert!(retryable(c, true) && retryable(c, false), "{c:?}");
        }
        assert!(retryable(Code::Internal, false));
        assert!(!retryable(Code::Internal, true));
        for c in [
            Code::DeadlineExceeded,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::InvalidArgument,
            Code::Unimplemented,
        ] {
            assert!(!retryable(c, false), "{c:?}");
        }
    }

    #[test]
    fn details_are_decoded() {
        let detail = NamespaceNotFoundFailure {
            namespace: "nope".into(),
        };
        let mut rpc = RpcStatus {
            code: Code::NotFound as i32,
            message: "Namespace nope is not found.".into(),
            details: vec![Default::default()],
        };
        rpc.details[0].type_url =
            "type.googleapis.com/temporal.api.errordetails.v1.NamespaceNotFoundFailure".into();
        rpc.details[0].value = detail.encode_to_vec();
        let status = tonic::Status::with_details(
            Code::NotFound,
            "Namespace nope is not found.",
            rpc.encode_to_vec().into(),
        );
        let e = error(
            "wf",
            "CountWorkflowExecutions",
            "http://h:1",
            "nope",
            "q",
            status,
        );
        assert_eq!(
            e.to_string(),
            "metric `wf`: temporal CountWorkflowExecutions at http://h:1 (namespace nope): NOT_FOUND: Namespace nope is not found. (namespace \"nope\" not found)"
        );
        let core: fleetscale_core::Error = e.into();
        assert!(core.is_not_found(), "{core:?}");
    }
}
