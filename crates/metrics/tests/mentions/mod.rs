//! What an error message must say.

use std::fmt::Display;

/// Asserts that `shown` (an error, a log) contains each of `parts`, naming the part it lacks.
#[track_caller]
pub fn assert_mentions(shown: impl Display, parts: &[&str]) {
    let text = shown.to_string();
    for part in parts {
        assert!(text.contains(part), "{part:?} is missing from: {text}");
    }
}
