//! Parse errors and warnings, each with the line (and column when known) they refer to.

use serde::Serialize;

use crate::heredoc::HeredocError;
use crate::lex::ExpandError;

/// A Dockerfile that cannot be parsed or expanded.
///
/// Displays as `line L: what` or `line L:C: what`, the way BuildKit prefixes its parse errors with
/// the line, so that a CLI can print `FILE:L: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    line: usize,
    column: Option<usize>,
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(line: usize, kind: ErrorKind) -> Self {
        Self {
            line,
            column: None,
            kind,
        }
    }

    pub(crate) fn msg(line: usize, message: impl Into<String>) -> Self {
        Self::new(line, ErrorKind::Syntax(message.into()))
    }

    pub(crate) fn with_column(mut self, column: usize) -> Self {
        self.column = Some(column);
        self
    }

    /// The 1-based line where the faulty instruction starts.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The 1-based column, when the error points inside a line.
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// What went wrong, without the location.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column {
            Some(c) => write!(f, "line {}:{}: {}", self.line, c, self.kind),
            None => write!(f, "line {}: {}", self.line, self.kind),
        }
    }
}

impl std::error::Error for Error {
    // The location is ours; the cause chain is the kind's (an expansion error, for one).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// The failed operation behind an [`Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A parser directive (`# escape=`, `# syntax=`, `# check=`) is repeated or invalid.
    #[error(transparent)]
    Directive(DirectiveError),
    /// A heredoc delimiter cannot be read.
    #[error(transparent)]
    Heredoc(HeredocError),
    /// A heredoc body has no terminator line before the end of the file.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// A line is longer than BuildKit's line reader accepts.
    #[error("dockerfile line greater than max allowed size of {max}")]
    LineTooLong {
        /// The longest line accepted, in bytes.
        max: usize,
    },
    /// The file holds no instruction at all.
    #[error("file with no instructions")]
    Empty,
    /// The keyword is not a Dockerfile instruction.
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    /// An instruction flag (`--from=…`) is unknown, repeated, or lacks its value.
    #[error("{0}")]
    Flag(String),
    /// A `RUN --mount` value is malformed.
    #[error("{0}")]
    Mount(String),
    /// Any other misuse of an instruction (wrong argument count, bad JSON array, …).
    #[error("{0}")]
    Syntax(String),
    /// Variable expansion of a word failed (`${V:?}` on an unset variable, bad pattern, …).
    #[error("failed to process {:?}", shorten(.word))]
    Expand {
        /// The word as written in the Dockerfile.
        word: String,
        /// Why the lexer refused it.
        #[source]
        source: ExpandError,
    },
}

/// A parser directive that cannot be applied (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectiveError {
    /// The same directive twice in the directive block.
    #[error("only one {name} parser directive can be used")]
    Repeated {
        /// The directive, lower-cased (`escape`).
        name: String,
    },
    /// `# escape=` with something other than `` ` `` or `\\`.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape {
        /// The value given.
        value: String,
    },
}

/// A non-fatal finding of the parser or of expansion, as BuildKit reports them on stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The 1-based line of the instruction it concerns.
    pub line: usize,
    /// Stable rule name, after BuildKit's build checks where one exists (`NoEmptyContinuation`).
    pub rule: &'static str,
    /// Human readable description.
    pub message: String,
}

/// A word as errors show it: whole when short, else its start and end (a hostile Dockerfile's
/// megabyte-long word must not come back in full).
fn shorten(word: &str) -> String {
    const KEEP: usize = 60;
    let chars: Vec<char> = word.chars().collect();
    if chars.len() <= 2 * KEEP {
        return word.to_owned();
    }
    let head: String = chars[..KEEP].iter().collect();
    let tail: String = chars[chars.len() - KEEP..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_line_and_column() {
        let e = Error::new(3, ErrorKind::UnterminatedHeredoc);
        assert_eq!(e.to_string(), "line 3: unterminated heredoc");
        let e = e.with_column(7);
        assert_eq!(e.to_string(), "line 3:7: unterminated heredoc");
        assert_eq!(e.line(), 3);
        assert_eq!(e.column(), Some(7));
    }

    #[test]
    fn expand_error_keeps_cause_in_source() {
        let e = Error::new(
            1,
            ErrorKind::Expand {
                word: "${A:?}".into(),
                source: ExpandError::Required {
                    name: "A".into(),
                    message: "is not allowed to be empty".into(),
                },
            },
        );
        assert_eq!(e.to_string(), "line 1: failed to process \"${A:?}\"");
        let src = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(src.as_deref(), Some("A: is not allowed to be empty"));
    }
}
