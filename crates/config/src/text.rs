//! Reading a file: `${NAME}` substitution (outside comments) with a map back to the text as
//! written, TOML parsing, and positions (`path:line:col`, the line quoted as written, never an
//! expanded value) for every error.

use std::path::Path;

use crate::error::{ConfigError, Result};
use crate::schema::FileConfig;

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `path:line:col: message` and the quoted line.
pub fn located(path: &Path, text: &str, offset: usize, message: &str) -> String {
    let (line, col) = line_col(text, offset);
    let src = text.lines().nth(line - 1).unwrap_or("").trim_end();
    format!(
        "{}:{line}:{col}: {message}\n  {line:>4} | {src}",
        path.display()
    )
}

/// One `${NAME}` replaced by its value: where it was in the file and where its value is in the
/// expanded text.
#[derive(Clone, Debug)]
struct Substitution {
    raw: std::ops::Range<usize>,
    expanded: std::ops::Range<usize>,
    name: String,
    value: String,
}

/// A configuration file as written and as parsed (`${VAR}` replaced), with the map between
/// the two so that every message quotes the file as written: an error never shows the value
/// of a variable (a token, typically), only `${NAME}`.
#[derive(Clone, Debug)]
pub struct ConfigText {
    /// The file as written (a leading byte order mark removed).
    pub raw: String,
    /// The text that is parsed.
    pub expanded: String,
    substitutions: Vec<Substitution>,
}

impl ConfigText {
    /// A text without any substitution (tests, strings built in code).
    pub fn plain(text: &str) -> ConfigText {
        ConfigText {
            raw: text.to_owned(),
            expanded: text.to_owned(),
            substitutions: Vec::new(),
        }
    }

    /// Replaces `${NAME}` with the environment variable `NAME` (not `$NAME`, which PromQL
    /// queries use; `${APP_NAME}`, `${TARGET}`, `${GROUP}` are left for query-time
    /// expansion). Nothing is replaced inside TOML comments (`# …` outside strings). A leading
    /// UTF-8 byte order mark is dropped.
    ///
    /// # Errors
    /// An unset variable, with its position in the file as written.
    pub fn expand(
        path: &Path,
        text: &str,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConfigText> {
        let raw = text.strip_prefix('\u{feff}').unwrap_or(text).to_owned();
        let mut out = String::with_capacity(raw.len());
        let mut subs = Vec::new();
        let b = raw.as_bytes();
        let comments = comment_mask(&raw);
        let mut i = 0;
        let mut copied = 0;
        while i < b.len() {
            if comments[i] || b[i] != b'$' || b.get(i + 1) != Some(&b'{') {
                i += 1;
                continue;
            }
            let Some(len) = raw[i + 2..].find('}') else {
                i += 1;
                continue;
            };
            let name = &raw[i + 2..i + 2 + len];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let end = i + 2 + len + 1;
            if valid && !matches!(name, "APP_NAME" | "TARGET" | "GROUP") {
                let Some(value) = getenv(name) else {
                    return Err(ConfigError::config(located(
                        path,
                        &raw,
                        i,
                        &format!("environment variable {name} is not set"),
                    )));
                };
                out.push_str(&raw[copied..i]);
                let at = out.len();
                out.push_str(&value);
                subs.push(Substitution {
                    raw: i..end,
                    expanded: at..out.len(),
                    name: name.to_owned(),
                    value,
                });
                copied = end;
                i = end;
            } else {
                i += 1;
            }
        }
        out.push_str(&raw[copied..]);
        Ok(ConfigText {
            raw,
            expanded: out,
            substitutions: subs,
        })
    }

    /// The offset in the file as written of an offset in the expanded text (the start of
    /// `${NAME}` for an offset inside a substituted value).
    pub fn raw_offset(&self, expanded: usize) -> usize {
        let mut delta: isize = 0;
        for s in &self.substitutions {
            if expanded < s.expanded.start {
                break;
            }
            if expanded < s.expanded.end {
                return s.raw.start;
            }
            delta = s.raw.end as isize - s.expanded.end as isize;
        }
        (expanded as isize + delta).max(0) as usize
    }

    /// `message` with every substituted value written back as `${NAME}`.
    pub fn unexpand(&self, message: &str) -> String {
        let subs: Vec<(String, String)> = self
            .substitutions
            .iter()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        fleetscale_fas::redact::unexpand(message, &subs)
    }

    /// `path:line:col: message` and the line as written in the file, for an offset in the
    /// expanded text.
    pub fn located(&self, path: &Path, expanded_offset: usize, message: &str) -> String {
        located(
            path,
            &self.raw,
            self.raw_offset(expanded_offset),
            &self.unexpand(message),
        )
    }

    /// The offset of the line of `key = …` in the table that starts at `table` (an
    /// expanded-text span whose start is the table's header or first key), up to the next
    /// table header; the table's start when the key is not found there.
    pub fn key_offset(&self, table: std::ops::Range<usize>, key: &str) -> usize {
        let start = table.start.min(self.expanded.len());
        let mut at = start;
        for (i, line) in self.expanded[start..].split_inclusive('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && t.starts_with('[') {
                break;
            }
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return at + (line.len() - t.len());
                }
            }
            at += line.len();
        }
        start
    }
}

/// Which bytes of a TOML text are inside comments (`# …` outside of strings): just enough of
/// TOML's lexical structure (basic and literal strings, single and multi-line, escapes) to
/// leave `${VAR}` in comments alone.
pub(crate) fn comment_mask(text: &str) -> Vec<bool> {
    let b = text.as_bytes();
    let mut mask = vec![false; b.len()];
    let starts = |i: usize, pat: &[u8]| b.get(i..i + pat.len()) == Some(pat);
    // The end of a string whose content starts at `i`: just past the closing delimiter.
    let string_end = |mut i: usize, delim: &[u8], escapes: bool, multiline: bool| -> usize {
        while i < b.len() {
            if escapes && b[i] == b'\\' {
                i += 2;
                continue;
            }
            if !multiline && b[i] == b'\n' {
                return i;
            }
            if starts(i, delim) {
                i += delim.len();
                // Up to two quotes right before a closing `"""` belong to the content.
                if multiline {
                    let mut extra = 0;
                    while extra < 2 && b.get(i) == Some(&delim[0]) {
                        i += 1;
                        extra += 1;
                    }
                }
                return i;
            }
            i += 1;
        }
        b.len()
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    mask[i] = true;
                    i += 1;
                }
            }
            b'"' if starts(i, b"\"\"\"") => i = string_end(i + 3, b"\"\"\"", true, true),
            b'"' => i = string_end(i + 1, b"\"", true, false),
            b'\'' if starts(i, b"\'\'\'") => i = string_end(i + 3, b"\'\'\'", false, true),
            b'\'' => i = string_end(i + 1, b"\'", false, false),
            _ => i += 1,
        }
    }
    mask
}

/// Reads and parses a file.
///
/// # Errors
/// The file cannot be read; a TOML or type error (file, line, column, key, the line quoted as
/// written, never an expanded value).
pub fn load(
    path: &Path,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<(FileConfig, ConfigText)> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::io(format!("read {}", path.display()), e))?;
    let text = ConfigText::expand(path, &raw, getenv)?;
    let cfg: FileConfig = toml::from_str(&text.expanded).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        ConfigError::config(text.located(path, offset, e.message().trim()))
    })?;
    if cfg.targets.is_empty() {
        return Err(ConfigError::config(format!(
            "{}: no [[target]] defined",
            path.display()
        )));
    }
    if let Some(c) = &cfg.coordination {
        c.get_ref().etcd_config().map_err(|e| {
            ConfigError::config(text.located(path, c.span().start, &format!("coordination: {e}")))
        })?;
    }
    Ok((cfg, text))
}
