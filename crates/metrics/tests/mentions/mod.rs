//! What an error message must say.

/// Asserts that `text` contains each of `parts`, naming the part it lacks.
#[track_caller]
pub fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} is missing from: {text}");
    }
}
