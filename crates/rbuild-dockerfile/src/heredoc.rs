//! Heredocs (`<<EOF`, `<<-EOF`, `3<<"EOF"`): BuildKit's `ParseHeredoc` and `heredocsFromLine`
//! from `frontend/dockerfile/parser/parser.go`.

use serde::Serialize;

use crate::lex::{ExpandError, Lexer};

/// A heredoc delimiter that cannot be read (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeredocError {
    /// The shell lexer refused the delimiter word (`<<"EOF` with its quote left open).
    #[error(transparent)]
    Lex(ExpandError),
    /// The word split differently with and without quote removal.
    #[error("internal lexing of heredoc produced inconsistent results: {0}")]
    Inconsistent(String),
}

/// A heredoc attached to a RUN, COPY or ADD line (`<<EOF`, `<<-EOF`, `3<<"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word after quote removal (`EOF`).
    pub name: String,
    /// The file descriptor before `<<` (`3<<EOF`); 0 when absent.
    pub file_descriptor: u64,
    /// False when any part of the delimiter was quoted: the body is then not expanded.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from the body and from the terminator.
    pub chomp: bool,
    /// The body exactly as read, each line with its line ending, tabs not yet stripped.
    pub content: String,
}

impl Heredoc {
    /// The body with `<<-` applied (BuildKit `ChompHeredocContent`: leading tabs of each line).
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// BuildKit `heredocsFromLine`: the line is split into shell words (quotes and escapes kept,
/// unset variables left alone) and every word shaped `[n]<<[-]WORD` is a heredoc.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, HeredocError> {
    let lex = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    let none = |_: &str| None;
    let words = lex
        .expand_words(line, &none)
        .map(|w| w.words)
        .unwrap_or_default();
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc(&w)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// Parses one `[n]<<[-]WORD` word (BuildKit `ParseHeredoc`); `None` when it is not one.
///
/// # Errors
///
/// [`HeredocError`]: a delimiter the shell lexer cannot read.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, HeredocError> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    // The regexp `^(\d*)<<(-?)\s*([^<]*)$`: blanks (RE2 `\s`) before the delimiter are skipped.
    let rest = rest.trim_start_matches(['\t', '\n', '\x0c', '\r', ' ']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // Go ParseUint: out of range gives the maximum, an empty string 0.
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse::<u64>().unwrap_or(u64::MAX)
    };
    let none = |_: &str| None;
    let lex = Lexer::new('\\').skip_unset_env(true);
    let words = lex
        .expand_words(rest, &none)
        .map_err(HeredocError::Lex)?
        .words;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = lex
        .raw_quotes(true)
        .expand_words(rest, &none)
        .map_err(HeredocError::Lex)?
        .words;
    if raw.len() != words.len() {
        return Err(HeredocError::Inconsistent(rest.to_owned()));
    }
    // Quotes anywhere in the delimiter turn expansion off: compare the quote counts with and
    // without quote removal.
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name,
        file_descriptor: fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("3<<-\"EOF\"").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.file_descriptor, h.chomp, h.expand),
            ("EOF", 3, true, false)
        );
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("a<<EOF").unwrap().is_none());
        assert!(parse_heredoc("<<EOF").unwrap().unwrap().expand);
        assert_eq!(parse_heredoc("<<- EOF").unwrap().unwrap().name, "EOF");
        assert!(parse_heredoc("<<EOF<").unwrap().is_none());
    }

    #[test]
    fn unreadable_delimiter_is_a_typed_error() {
        let e = parse_heredoc("<<\"EOF").unwrap_err();
        assert!(
            matches!(e, HeredocError::Lex(ExpandError::Unterminated(_))),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "unexpected end of statement while looking for matching double-quote"
        );
    }
}
