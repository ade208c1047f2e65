//! [`AwsError`]: every way an EC2 call or a pool configuration can fail, the classification of
//! EC2's error codes, and the mapping onto the core error classes.
//!
//! Error codes from the EC2 API reference, "Error codes for the Amazon EC2 API"
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>): client
//! errors come with HTTP 4xx, server errors (`InternalError`, `Unavailable`,
//! `RequestLimitExceeded`, the `Insufficient*Capacity` family) with 5xx.

use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::RequestId;
use fleetscale_core::{BoxError, Error as CoreError};

/// Errors of the EC2 backend. API errors carry the operation, EC2's code and message, the HTTP
/// status and the request id (to find the call in CloudTrail); never a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// The pool configuration is invalid; the message names the key.
    #[error("invalid EC2 pool configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// EC2 answered with an error code.
    #[error("EC2 {operation}: {code}: {message}{}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(), request_id.as_ref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Api {
        /// The API action, e.g. `RunInstances`.
        operation: &'static str,
        /// EC2's error code, e.g. `InsufficientInstanceCapacity`.
        code: String,
        /// EC2's message.
        message: String,
        /// The HTTP status.
        status: Option<u16>,
        /// EC2's request id.
        request_id: Option<String>,
    },
    /// No answer: the connection failed or broke, or the attempt timed out.
    #[error("EC2 {operation}: {}: {message}", if *timeout { "timed out" } else { "no answer" })]
    Transport {
        /// The API action.
        operation: &'static str,
        /// What happened.
        message: String,
        /// Whether it was a timeout.
        timeout: bool,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },
    /// EC2 (or something in between) answered something that is not a valid response.
    #[error("EC2 {operation}: invalid response: {message}")]
    InvalidResponse {
        /// The API action.
        operation: &'static str,
        /// What was wrong.
        message: String,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The request could not be built or sent for a reason on this side (no region, no
    /// credentials, a malformed endpoint).
    #[error("EC2 {operation}: request not sent: {message}")]
    Request {
        /// The API action.
        operation: &'static str,
        /// What was wrong.
        message: String,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The instance is not a live member of the pool (unknown, terminated, or without the pool
    /// tag): nothing was done to it.
    #[error("instance {id} is not in pool {pool}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    NotInPool {
        /// The instance id asked for.
        id: String,
        /// The pool asked about (the value its pool tag must have).
        pool: String,
        /// Why, when more is known (e.g. `terminated`).
        reason: String,
    },
    /// The operation is not possible in this pool.
    #[error("{operation} is not supported here: {reason}")]
    Unsupported {
        /// The operation (its core name, e.g. `create stopped`).
        operation: &'static str,
        /// Why.
        reason: String,
    },
    /// The instance is in a state the operation cannot start from (e.g. stopping an instance
    /// that is still `pending`).
    #[error("instance {id} is {state}: cannot {operation} it now")]
    WrongState {
        /// The id of the instance (`i-…`) left as it was.
        id: String,
        /// Its EC2 state.
        state: String,
        /// What was asked of the instance (`start`, `stop`, `stop (after launch)`).
        operation: &'static str,
    },
    /// An instance was launched but is already shutting down or terminated (EC2 found no
    /// capacity for it after all, e.g. a spot instance reclaimed at once).
    #[error("instance {id} was launched but is {state}: {reason}")]
    LaunchedButGone {
        /// The id of the launched instance (`i-…`).
        id: String,
        /// Its EC2 state.
        state: String,
        /// EC2's state reason.
        reason: String,
    },
    /// A launched instance did not reach `running` in time to be stopped (create stopped).
    #[error("instance {id} was still {state} after {after:?}; it was not stopped")]
    LaunchWait {
        /// The id of the launched instance (`i-…`), which was not stopped.
        id: String,
        /// Its last EC2 state.
        state: String,
        /// How long the scaler waited.
        after: Duration,
    },
}

/// What an EC2 error code means to the scaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// `RequestLimitExceeded`: the call was refused unexecuted; retry after a backoff.
    Throttled,
    /// No capacity (or quota) for the instance: `InsufficientInstanceCapacity` and friends,
    /// spot limits and prices.
    Capacity,
    /// The instance id is unknown or malformed.
    NotFound,
    /// The credentials or permissions were refused.
    Unauthorized,
    /// The instance's state does not allow the operation.
    IncorrectState,
    /// A client token was reused with different parameters.
    TokenMismatch,
    /// EC2 does not support the operation for this instance (e.g. stopping a one-time spot
    /// instance).
    Unsupported,
    /// The request is invalid (parameters, AMI, template, subnet, ...).
    Invalid,
    /// A temporary server failure (`InternalError`, `Unavailable`, HTTP 5xx).
    Server,
}

/// Classifies an EC2 error code (with the HTTP status for codes not listed).
pub fn classify(code: &str, status: Option<u16>) -> ErrorClass {
    match code {
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            ErrorClass::Throttled
        }
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientAddressCapacity"
        | "InsufficientFreeAddressesInSubnet"
        | "InsufficientCapacityOnHost"
        | "InstanceLimitExceeded"
        | "VcpuLimitExceeded"
        | "MaxSpotInstanceCountExceeded"
        | "SpotMaxPriceTooLow" => ErrorClass::Capacity,
        "InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed" | "InvalidInstanceID" => {
            ErrorClass::NotFound
        }
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "OptInRequired"
        | "Blocked"
        | "PendingVerification"
        | "RequestExpired"
        | "ExpiredToken" => ErrorClass::Unauthorized,
        "IncorrectInstanceState" | "IncorrectState" => ErrorClass::IncorrectState,
        "IdempotentParameterMismatch" => ErrorClass::TokenMismatch,
        "UnsupportedOperation" | "Unsupported" => ErrorClass::Unsupported,
        "InternalError" | "InternalFailure" | "Unavailable" | "ServiceUnavailable" => {
            ErrorClass::Server
        }
        _ => match status {
            Some(s) if s >= 500 => ErrorClass::Server,
            _ => ErrorClass::Invalid,
        },
    }
}

/// How the retry loop treats a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Refused unexecuted: retrying is safe for every call.
    Refused,
    /// Unknown whether the call took effect (no answer, 5xx, garbled answer): retrying is safe
    /// for idempotent calls; a launch must first look for its instance.
    Ambiguous,
    /// Final: retrying would not help.
    Final,
}

impl AwsError {
    /// EC2's error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The class of an API error.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            AwsError::Api { code, status, .. } => Some(classify(code, *status)),
            _ => None,
        }
    }

    pub(crate) fn retry(&self) -> Retry {
        match self {
            AwsError::Api { .. } => match self.class() {
                Some(ErrorClass::Throttled) => Retry::Refused,
                Some(ErrorClass::Server) => Retry::Ambiguous,
                _ => Retry::Final,
            },
            AwsError::Transport { .. } | AwsError::InvalidResponse { .. } => Retry::Ambiguous,
            _ => Retry::Final,
        }
    }

    /// Converts an SDK error of `operation`.
    pub(crate) fn from_sdk<E>(operation: &'static str, err: SdkError<E>) -> AwsError
    where
        E: ProvideErrorMetadata + RequestId + std::error::Error + Send + Sync + 'static,
    {
        match err {
            SdkError::ServiceError(ctx) if ctx.err().code().is_none() => {
                // Not an EC2 error document (no code): e.g. an HTML page from a gateway.
                let status = ctx.raw().status().as_u16();
                let excerpt: String = ctx
                    .raw()
                    .body()
                    .bytes()
                    .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
                    .unwrap_or_default();
                AwsError::InvalidResponse {
                    operation,
                    message: format!("HTTP {status} without an EC2 error code: {excerpt:?}"),
                    source: Some(Box::new(SdkError::ServiceError(ctx))),
                }
            }
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let e = ctx.err();
                let code = e.code().unwrap_or("Unknown").to_string();
                let message = e.message().unwrap_or("").to_string();
                let request_id = e.request_id().map(str::to_string);
                AwsError::Api {
                    operation,
                    code,
                    message,
                    status: Some(status),
                    request_id,
                }
            }
            SdkError::TimeoutError(_) => AwsError::Transport {
                operation,
                message: "the attempt timed out".into(),
                timeout: true,
                source: Some(Box::new(err)),
            },
            SdkError::DispatchFailure(ref d) => {
                let timeout = d.is_timeout();
                if d.is_user() {
                    AwsError::Request {
                        operation,
                        message: describe(&err),
                        source: Some(Box::new(err)),
                    }
                } else {
                    AwsError::Transport {
                        operation,
                        message: describe(&err),
                        timeout,
                        source: Some(Box::new(err)),
                    }
                }
            }
            SdkError::ResponseError(_) => AwsError::InvalidResponse {
                operation,
                message: describe(&err),
                source: Some(Box::new(err)),
            },
            // Construction failures (no region, no credentials, ...) and future variants.
            other => AwsError::Request {
                operation,
                message: describe(&other),
                source: Some(Box::new(other)),
            },
        }
    }
}

/// The whole source chain in one line (the SDK's top-level messages are terse).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    aws_sdk_ec2::error::DisplayErrorContext(e).to_string()
}

impl From<AwsError> for CoreError {
    /// Maps onto the core classes, keeping the AWS error as the `source` of every class that
    /// has one (a throttle keeps EC2's message and request id).
    fn from(e: AwsError) -> CoreError {
        let message = e.to_string();
        let core = match &e {
            AwsError::Config { .. } => CoreError::config(message),
            AwsError::NotInPool { id, pool, reason } => {
                CoreError::not_found(if reason.is_empty() {
                    format!("instance {id} in pool {pool}")
                } else {
                    format!("instance {id} in pool {pool} ({reason})")
                })
            }
            AwsError::Unsupported { operation, .. } => {
                tracing::warn!(error = %message, "EC2 operation not supported");
                return CoreError::Unsupported { operation };
            }
            AwsError::WrongState { .. } => CoreError::conflict(message),
            AwsError::LaunchedButGone { .. } => CoreError::capacity(message),
            AwsError::LaunchWait { id, after, .. } => CoreError::timeout(
                format!("wait for instance {id} to run before stopping it"),
                *after,
            ),
            AwsError::Transport { .. } => CoreError::unavailable(message),
            AwsError::InvalidResponse { operation, .. } => CoreError::InvalidResponse {
                context: format!("EC2 {operation}"),
                message,
                source: None,
            },
            AwsError::Request { .. } => CoreError::Backend {
                message,
                retryable: false,
                source: None,
            },
            AwsError::Api { request_id, .. } => match e.class() {
                Some(ErrorClass::Throttled) => CoreError::RateLimited {
                    message,
                    request_id: request_id.clone(),
                    retry_after: None,
                    source: None,
                },
                Some(ErrorClass::Capacity) => CoreError::capacity(message),
                Some(ErrorClass::NotFound) => CoreError::not_found(message),
                Some(ErrorClass::Unauthorized) => CoreError::unauthorized(message),
                Some(ErrorClass::IncorrectState) | Some(ErrorClass::TokenMismatch) => {
                    CoreError::conflict(message)
                }
                Some(ErrorClass::Server) => CoreError::unavailable(message),
                Some(ErrorClass::Unsupported) | Some(ErrorClass::Invalid) | None => {
                    CoreError::invalid_request(message)
                }
            },
        };
        core.with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, status: u16) -> AwsError {
        AwsError::Api {
            operation: "RunInstances",
            code: code.into(),
            message: "m".into(),
            status: Some(status),
            request_id: Some("req-1".into()),
        }
    }

    #[test]
    fn codes_map_to_core_classes() {
        let cases: [(&str, u16, &str); 12] = [
            ("RequestLimitExceeded", 503, "rate_limited"),
            ("InsufficientInstanceCapacity", 500, "capacity"),
            ("SpotMaxPriceTooLow", 400, "capacity"),
            ("MaxSpotInstanceCountExceeded", 400, "capacity"),
            ("VcpuLimitExceeded", 400, "capacity"),
            ("InvalidInstanceID.NotFound", 400, "not_found"),
            ("UnauthorizedOperation", 403, "unauthorized"),
            ("IncorrectInstanceState", 400, "conflict"),
            ("InternalError", 500, "unavailable"),
            ("SomethingNew", 503, "unavailable"),
            ("InvalidAMIID.NotFound", 400, "invalid_request"),
            ("UnsupportedOperation", 400, "invalid_request"),
        ];
        for (code, status, kind) in cases {
            let core: CoreError = api(code, status).into();
            assert_eq!(core.kind(), kind, "{code}");
        }
    }

    #[test]
    fn retry_classes() {
        assert_eq!(api("RequestLimitExceeded", 503).retry(), Retry::Refused);
        assert_eq!(api("InternalError", 500).retry(), Retry::Ambiguous);
        assert_eq!(
            api("InsufficientInstanceCapacity", 500).retry(),
            Retry::Final
        );
        assert_eq!(api("InvalidParameterValue", 400).retry(), Retry::Final);
        let t = AwsError::Transport {
            operation: "DescribeInstances",
            message: "reset".into(),
            timeout: false,
            source: None,
        };
        assert_eq!(t.retry(), Retry::Ambiguous);
    }

    #[test]
    fn messages_carry_context() {
        let m = api("InsufficientInstanceCapacity", 500).to_string();
        assert_eq!(
            m,
            "EC2 RunInstances: InsufficientInstanceCapacity: m (HTTP 500) (request id req-1)"
        );
        let nf: CoreError = AwsError::NotInPool {
            id: "i-1".into(),
            pool: "p".into(),
            reason: String::new(),
        }
        .into();
        assert!(nf.is_not_found());
        assert_eq!(nf.to_string(), "instance i-1 in pool p not found");
    }
}
