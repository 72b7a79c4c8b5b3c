//! What is wrong with a configuration: `Problem`, `ConfigError`, and finding the file line of a key.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

/// Where a problematic setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file (or inline text); `line` when the key could be found in it.
    File { file: String, line: Option<usize> },
    /// An `FTPFRONT_<SECTION>__<KEY>` environment variable.
    Env { var: String },
}

/// One invalid setting: its key path, what is wrong, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path segments, e.g. `["backends", "0", "address"]`.
    pub path: Vec<String>,
    pub message: String,
    /// `None` when validating a `Config` that was not loaded from text.
    pub origin: Option<Origin>,
}

impl Problem {
    pub(super) fn new(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|segment| segment.to_string()).collect(),
            message: message.into(),
            origin: None,
        }
    }

    /// The key path as a user writes it: `backends[0].address`.
    pub fn key(&self) -> String {
        if self.path.is_empty() {
            return "(top level)".to_string();
        }
        let mut key = String::new();
        for segment in &self.path {
            if segment.parse::<usize>().is_ok() {
                key.push_str(&format!("[{segment}]"));
            } else {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(segment);
            }
        }
        key
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, message) = (self.key(), &self.message);
        match &self.origin {
            Some(Origin::File {
                file,
                line: Some(line),
            }) => write!(f, "{file}:{line}: {key}: {message}"),
            Some(Origin::File { file, line: None }) => write!(f, "{file}: {key}: {message}"),
            Some(Origin::Env { var }) => {
                write!(f, "environment variable {var} ({key}): {message}")
            }
            None => write!(f, "{key}: {message}"),
        }
    }
}

/// Everything that can be wrong with a configuration; `Display` is the message for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML at all; `line`/`column` are 1-based.
    #[error("{file}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid TOML with invalid settings: one line per problem.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The invalid settings (empty for read and syntax errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

fn join_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The line of the deepest key or table header in `text` that is `path` or an
/// ancestor of it: the key itself, else its inline table/array, else its section.
pub(super) fn find_line(text: &str, path: &[String]) -> Option<usize> {
    toml_key_lines(text)
        .into_iter()
        .filter(|(key, _)| !key.is_empty() && path.starts_with(key))
        .max_by_key(|(key, line)| (key.len(), Reverse(*line)))
        .map(|(_, line)| line)
}

/// (key path, 1-based line) of every table header and `key =` line of a TOML
/// text that already parsed. A line scan, not a parser: enough to point a human
/// at the right line; array-of-tables headers get their element index.
fn toml_key_lines(text: &str) -> Vec<(Vec<String>, usize)> {
    let mut entries = Vec::new();
    let mut table: Vec<String> = Vec::new();
    let mut array_lengths: HashMap<Vec<String>, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix("[[") {
            let name = split_key(header.split("]]").next().unwrap_or_default());
            let length = array_lengths.entry(name.clone()).or_insert(0);
            table = name;
            table.push(length.to_string());
            *length += 1;
            entries.push((table.clone(), index + 1));
        } else if let Some(header) = line.strip_prefix('[') {
            table = split_key(header.split(']').next().unwrap_or_default());
            entries.push((table.clone(), index + 1));
        } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            let mut path = table.clone();
            path.extend(split_key(key));
            entries.push((path, index + 1));
        }
    }
    entries
}

/// Splits a TOML key (`a.b`, `"a.b".c`) into segments, unquoting them.
fn split_key(key: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in key.chars() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => segments.push(std::mem::take(&mut current).trim().to_string()),
            (None, c) => current.push(c),
        }
    }
    segments.push(current.trim().to_string());
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_are_found() {
        let text = "# c = 1\n[a]\nb = 1\n\"c.d\".e = 2\n[[x.y]]\nz = 3\n[[x.y]]\nz = 4\n";
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(find_line(text, &path(&["a", "b"])), Some(3));
        assert_eq!(find_line(text, &path(&["a", "c.d", "e"])), Some(4));
        assert_eq!(find_line(text, &path(&["a", "missing"])), Some(2));
        assert_eq!(find_line(text, &path(&["x", "y", "1", "z"])), Some(8));
        assert_eq!(find_line(text, &path(&["x", "y", "0", "w"])), Some(5));
        assert_eq!(find_line(text, &path(&["c"])), None);
    }
}
