//! Secrets never printed: a process-wide list of the configured secrets (API tokens, values of
//! environment variables substituted into a configuration file), and redaction of any text the
//! binaries write (log lines, error messages, `eval` output) before it leaves the process.
//!
//! Tokens are kept out of messages where they are built (`Debug` of every token type is
//! redacted, credentials travel in headers only); this is the second line: whatever path a
//! secret takes into a message (an API error body that echoes the `Authorization` header, a
//! YAML type error quoting an expanded value), it is replaced by `<redacted>` on the way out.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{OnceLock, RwLock};

/// The text that replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Shorter values are not treated as secrets: redacting `1` or `app` would mangle every
/// message, and no real token is that short.
pub const MIN_SECRET_LEN: usize = 6;

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// The parts of a token worth redacting on their own: the whole value, the value without an
/// auth scheme (`FlyV1 `, `Bearer `), and each comma-separated macaroon of a Fly token (an API
/// may echo one of them).
fn parts(secret: &str) -> Vec<String> {
    let secret = secret.trim();
    let mut out = vec![secret.to_owned()];
    let bare = secret
        .strip_prefix("FlyV1 ")
        .or_else(|| secret.strip_prefix("Bearer "))
        .unwrap_or(secret)
        .trim();
    out.push(bare.to_owned());
    out.extend(bare.split(',').map(|p| p.trim().to_owned()));
    out.retain(|p| p.chars().count() >= MIN_SECRET_LEN);
    out
}

/// Registers a secret: from now on [`redact`] replaces it (and its parts) in any text.
/// Values shorter than [`MIN_SECRET_LEN`] characters are ignored.
pub fn register(secret: &str) {
    let new = parts(secret);
    if new.is_empty() {
        return;
    }
    let mut list = registry().write().unwrap_or_else(|e| e.into_inner());
    for p in new {
        if !list.contains(&p) {
            list.push(p);
        }
    }
    // Longest first, so a whole token is replaced before one of its parts.
    list.sort_by_key(|p| std::cmp::Reverse(p.len()));
}

/// `text` with every registered secret replaced by [`REDACTED`].
///
/// ```
/// fleetscale_fas::redact::register("FlyV1 fm2_docs_example_token");
/// assert_eq!(
///     fleetscale_fas::redact::redact("got FlyV1 fm2_docs_example_token back"),
///     "got <redacted> back"
/// );
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let list = registry().read().unwrap_or_else(|e| e.into_inner());
    redact_with(text, &list)
}

/// [`redact`] with an explicit list (longest first) instead of the registry.
pub fn redact_with<'a>(text: &'a str, secrets: &[String]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), REDACTED));
        }
    }
    out
}

/// `text` with every substituted value (`(name, value)` of an environment variable expanded
/// into a configuration file) written back as `${name}`: an error about the file shows what
/// the file says, never what a variable held. Values shorter than [`MIN_SECRET_LEN`] are left
/// alone (they would match everywhere).
///
/// ```
/// let subs = vec![("TOKEN".to_owned(), "s3cret-value".to_owned())];
/// assert_eq!(
///     fleetscale_fas::redact::unexpand("invalid type: string \"s3cret-value\"", &subs),
///     "invalid type: string \"${TOKEN}\""
/// );
/// ```
pub fn unexpand(text: &str, subs: &[(String, String)]) -> String {
    let mut subs: Vec<&(String, String)> = subs
        .iter()
        .filter(|(_, v)| v.chars().count() >= MIN_SECRET_LEN)
        .collect();
    subs.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for (name, value) in subs {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    out
}

/// A writer that redacts every registered secret from what passes through it. Log layers
/// write one whole event per `write` call, so a secret is never split between two calls.
#[derive(Debug)]
pub struct RedactingWriter<W>(pub W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                let clean = redact(text);
                self.0.write_all(clean.as_bytes())?;
            }
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Prints a line to standard error, redacted.
pub fn eprint_line(text: &str) {
    let _ = writeln!(std::io::stderr(), "{}", redact(text));
}

/// Prints a line to standard output, redacted.
pub fn print_line(text: &str) {
    let _ = writeln!(std::io::stdout(), "{}", redact(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_their_parts_are_redacted() {
        let secrets = {
            let mut p = parts("FlyV1 fm2_aaaaaaaa,fo1_bbbbbbbb");
            p.sort_by_key(|p| std::cmp::Reverse(p.len()));
            p
        };
        assert_eq!(
            redact_with("auth: FlyV1 fm2_aaaaaaaa,fo1_bbbbbbbb.", &secrets),
            "auth: <redacted>."
        );
        assert_eq!(
            redact_with("echo fo1_bbbbbbbb", &secrets),
            "echo <redacted>"
        );
        assert_eq!(redact_with("nothing here", &secrets), "nothing here");
        assert!(parts("abc").is_empty(), "short values are not secrets");
    }
}
