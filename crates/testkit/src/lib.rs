//! Test support for backend authors: the pieces the test harnesses of several fleetscale
//! crates need alike, kept in one place.
//!
//! - [`pki`] (feature `pki`): [`pki::TestPki`], a fresh test CA with a server certificate for
//!   `localhost`/`127.0.0.1`, a client certificate and an untrusted second CA, as PEM, and
//!   [`pki::TestPki::write`] to put them into files for a server process.
//! - [`server`] (feature `http`): [`server::LoopbackServer`], an axum router on a free
//!   loopback port on its own thread and runtime, and [`server::closed_port`].
//! - [`proxy`] (feature `http`): the steps every loopback proxy repeats: read a request
//!   whole ([`proxy::BufferedRequest`]), send it upstream and read the answer whole
//!   ([`proxy::BufferedRequest::send`]), answer it ([`proxy::UpstreamAnswer::into_response`]).
//! - [`debug_as_display!`]: `Debug` that prints `Display`, for harness errors whose message
//!   is an install hint or a server's log (so `unwrap()` in a test shows it readably).
//!
//! Only test code should depend on this crate: the backends name it under their
//! `test-harness` features.
//!
//! ```
//! #[derive(thiserror::Error)]
//! enum HarnessError {
//!     #[error("server not found: run scripts/install-test-deps.sh")]
//!     NotInstalled,
//! }
//! fleetscale_testkit::debug_as_display!(HarnessError);
//!
//! assert_eq!(
//!     format!("{:?}", HarnessError::NotInstalled),
//!     "server not found: run scripts/install-test-deps.sh"
//! );
//! ```

#[cfg(feature = "pki")]
pub mod pki;
#[cfg(feature = "http")]
pub mod proxy;
#[cfg(feature = "http")]
pub mod server;

/// Implements `Debug` for an error type by printing its `Display` text: a test's `unwrap()`
/// then shows an install hint or the end of a server's log as written, line breaks included,
/// instead of an escaped one-line struct.
#[macro_export]
macro_rules! debug_as_display {
    ($error:ty) => {
        impl ::std::fmt::Debug for $error {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }
    };
}
