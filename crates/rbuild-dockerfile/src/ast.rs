//! The line reader of BuildKit's parser (`frontend/dockerfile/parser/parser.go`,
//! `directives.go`): directives, BOM, CRLF, comments, line continuations and heredoc bodies,
//! handing each joined line to the per-keyword line parsers.

use serde::Serialize;

use crate::error::{DirectiveError, Error, ErrorKind, Warning};
use crate::heredoc::heredocs_from_line;
use crate::line_parsers::new_node_from_line;
use crate::node::{Node, NodeArg};

/// Parser directives found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# syntax=` value (the frontend image), if any.
    pub syntax: Option<String>,
    /// `# check=` value (build-check configuration), if any.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

#[derive(Default)]
struct DirectiveState {
    values: Directives,
    done: bool,
    seen: Vec<String>,
}

impl DirectiveState {
    /// BuildKit `DirectiveParser.ParseLine`: `#`, then `name = value` with the regexp
    /// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`; the first line that is not a known directive
    /// ends the directive block.
    fn check_line(&mut self, line: &str) -> Result<(), DirectiveError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = directive_match(line) else {
            self.done = true;
            return Ok(());
        };
        let key = name.to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(DirectiveError::Repeated { name: key });
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => match value {
                "\\" => self.values.escape = '\\',
                "`" => self.values.escape = '`',
                v => {
                    return Err(DirectiveError::InvalidEscape {
                        value: v.to_owned(),
                    });
                }
            },
            "syntax" => self.values.syntax = Some(value.to_string()),
            _ => self.values.check = Some(value.to_string()),
        }
        Ok(())
    }
}

fn is_re_space(c: char) -> bool {
    // Go RE2 `\s` is [\t\n\f\r ].
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

fn directive_match(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let mut chars = rest.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let name_end = rest
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_alphanumeric())
        .map_or(rest.len(), |(i, _)| i);
    let (name, rest) = rest.split_at(name_end);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    if rest.is_empty() {
        return None;
    }
    let value = rest.trim_matches(is_re_space);
    if value.is_empty() {
        // `(.+?)` needs one character: the greedy `\s*` gives the last blank back.
        return Some((name, &rest[rest.len() - 1..]));
    }
    Some((name, value))
}

/// The untyped result of the line reader (BuildKit's `parser.Result`), for tools that want
/// BuildKit's parser behaviour without the instruction rules (an unknown keyword is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ast {
    /// One node per instruction, in file order.
    pub nodes: Vec<Node>,
    /// Parser directives.
    pub directives: Directives,
    /// Empty continuation line warnings.
    pub warnings: Vec<Warning>,
}

impl Ast {
    /// BuildKit's dump of the whole file (`result.AST.Dump()` plus the newline BuildKit's parser
    /// tests add): `(node)` per line.
    pub fn dump(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("({})\n", n.dump()))
            .collect()
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

/// BuildKit's continuation regexp `([^E])E[ \t]*$|^E[ \t]*$` for escape `E`: an escape at the
/// end of the line continues it, unless it is itself escaped.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

fn process_line(
    d: &mut DirectiveState,
    raw: &str,
    strip_left: bool,
) -> Result<String, DirectiveError> {
    let mut token = trim_newline(raw);
    if strip_left {
        token = token.trim_start();
    }
    d.check_line(token)?;
    // `#` starts a comment only at the start of a line (after blanks on a first line).
    Ok(if token.starts_with('#') {
        String::new()
    } else {
        token.to_string()
    })
}

/// The longest line BuildKit reads (`bufio.MaxScanTokenSize - 1`), in bytes, the newline not
/// counted.
const MAX_LINE: usize = 64 * 1024 - 1;

/// Reads `src` into nodes, as BuildKit's `parser.Parse`.
///
/// # Errors
///
/// A repeated or invalid directive, a JSON array with non-strings, an unterminated heredoc, a
/// file without instructions, a line longer than 65,535 bytes.
pub fn parse_ast(src: &str) -> Result<Ast, Error> {
    let bom = src.len();
    let src = src.strip_prefix('\u{FEFF}').unwrap_or(src);
    let bom = bom - src.len();
    let mut d = DirectiveState::default();
    // BuildKit reads lines with a `bufio.Scanner` of the default 64 KiB buffer: a line longer than
    // that stops the scan, and the parse fails after the lines read so far are handled.
    let too_long = std::cell::Cell::new(false);
    let mut first = true;
    let mut lines = src.split_inclusive('\n').take_while(|l| {
        let extra = if std::mem::take(&mut first) { bom } else { 0 };
        let fits = l.strip_suffix('\n').unwrap_or(l).len() + extra <= MAX_LINE;
        too_long.set(!fits);
        fits
    });
    let mut current = 0usize;
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    while let Some(raw) = lines.next() {
        let processed = process_line(&mut d, raw, true)
            .map_err(|m| Error::new(current + 1, ErrorKind::Directive(m)))?;
        current += 1;
        let start = current;
        let escape = d.values.escape;
        let (mut line, mut eol) = trim_continuation(&processed, escape);
        if eol && line.is_empty() {
            continue;
        }
        let mut has_empty = false;
        while !eol {
            let Some(raw) = lines.next() else { break };
            let processed = process_line(&mut d, raw, false)
                .map_err(|m| Error::new(current + 1, ErrorKind::Directive(m)))?;
            current += 1;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start().is_empty() {
                has_empty = true;
                continue;
            }
            let (cont, e) = trim_continuation(&processed, escape);
            line.push_str(&cont);
            eol = e;
        }
        if has_empty {
            warnings.push(Warning {
                line: start,
                rule: "NoEmptyContinuation",
                message: format!("empty continuation line found in: {line}"),
            });
        }
        let mut node = new_node_from_line(&line, escape).map_err(|e| Error::new(start, e))?;
        // A heredoc word contains `<<` literally (nothing is expanded while looking for one), so
        // lines without it skip the lexer.
        if node.can_contain_heredoc() && line.contains("<<") {
            let heredocs =
                heredocs_from_line(&line).map_err(|e| Error::new(start, ErrorKind::Heredoc(e)))?;
            for mut h in heredocs {
                let mut terminated = false;
                for raw in lines.by_ref() {
                    current += 1;
                    let mut t = trim_newline(raw);
                    if h.chomp {
                        t = t.trim_start_matches('\t');
                    }
                    if t == h.name {
                        terminated = true;
                        break;
                    }
                    h.content.push_str(raw);
                }
                if !terminated {
                    return Err(Error::new(start, ErrorKind::UnterminatedHeredoc));
                }
                node.heredocs.push(h);
            }
        }
        node.start_line = start;
        node.end_line = current;
        set_lines(&mut node, start, current);
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Error::new(current.max(1), ErrorKind::Empty));
    }
    if too_long.get() {
        return Err(Error::new(
            current + 1,
            ErrorKind::LineTooLong { max: MAX_LINE },
        ));
    }
    Ok(Ast {
        nodes,
        directives: d.values,
        warnings,
    })
}

fn set_lines(node: &mut Node, start: usize, end: usize) {
    node.start_line = start;
    node.end_line = end;
    for a in &mut node.args {
        if let NodeArg::Sub(n) = a {
            set_lines(n, start, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> String {
        parse_ast(src)
            .unwrap()
            .nodes
            .iter()
            .map(|n| format!("({})\n", n.dump()))
            .collect()
    }

    #[test]
    fn dump_matches_buildkit_format() {
        assert_eq!(
            dump("FROM busybox AS b\nCOPY --from=b --chown=1:1 a \"b c\"\n"),
            "(from \"busybox\" \"AS\" \"b\")\n(copy [\"--from=b\" \"--chown=1:1\"] \"a\" \"\\\"b\" \"c\\\"\")\n"
        );
        assert_eq!(dump("onbuild run echo hi"), "(onbuild (run \"echo hi\"))\n");
        assert_eq!(
            dump("ENV A=1 B=\"x y\""),
            "(env \"A\" \"1\" \"=\" \"B\" \"\\\"x y\\\"\" \"=\")\n"
        );
        assert_eq!(dump("ENV A x y"), "(env \"A\" \"x y\" \"\")\n");
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(dump("RUN a \\\n  b"), "(run \"a   b\")\n");
        assert_eq!(
            dump("RUN a \\\\\nRUN b"),
            "(run \"a \\\\\\\\\")\n(run \"b\")\n"
        );
        assert_eq!(dump("RUN a \\\n# c\n b"), "(run \"a  b\")\n");
        assert_eq!(dump("RUN a \\"), "(run \"a\")\n");
    }

    #[test]
    fn directives() {
        let a = parse_ast("# escape=`\n# syntax=docker/dockerfile:1\nFROM x").unwrap();
        assert_eq!(a.directives.escape, '`');
        assert_eq!(a.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        let e = parse_ast("# escape=`\n# escape=\\\nFROM x").err().unwrap();
        assert_eq!(
            e.to_string(),
            "line 2: only one escape parser directive can be used"
        );
        assert_eq!(
            *e.kind(),
            ErrorKind::Directive(DirectiveError::Repeated {
                name: "escape".into()
            })
        );
        assert!(parse_ast("# escape=x\nFROM x").is_err());
        let late = parse_ast("# hello\n# escape=`\nFROM x").unwrap();
        assert_eq!(late.directives.escape, '\\');
    }

    #[test]
    fn lines_longer_than_buildkits_scanner_buffer_are_refused() {
        let ok = format!("FROM x\nRUN {}\n", "a".repeat(MAX_LINE - 4));
        assert_eq!(parse_ast(&ok).unwrap().nodes.len(), 2);
        let ok_last = format!("FROM x\nRUN {}", "a".repeat(MAX_LINE - 4));
        assert!(parse_ast(&ok_last).is_ok());
        let long = format!("FROM x\nRUN {}\nRUN b\n", "a".repeat(MAX_LINE - 3));
        let e = parse_ast(&long).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: dockerfile line greater than max allowed size of 65535"
        );
        // The byte-order mark counts: BuildKit strips it after reading the line.
        let bom = format!("\u{feff}RUN {}\n", "a".repeat(MAX_LINE - 4));
        assert!(parse_ast(&bom).is_err());
        assert!(parse_ast(&bom[3..]).is_ok());
        // A heredoc body line is read by the same scanner.
        let body = format!("FROM x\nRUN <<EOF\n{}\nEOF\n", "a".repeat(MAX_LINE + 1));
        assert!(parse_ast(&body).is_err());
        // Nothing read before it: the file has no instructions.
        let e = parse_ast(&"a".repeat(MAX_LINE + 1)).unwrap_err();
        assert_eq!(*e.kind(), ErrorKind::Empty);
    }

    #[test]
    fn exec_form_json_is_read_as_go_reads_it() {
        // A lone surrogate escape is U+FFFD to Go, not a reason to fall back to the shell form.
        assert_eq!(dump("CMD [\"\\ud800\"]"), "(cmd \"\u{fffd}\")\n");
        // 200 levels of nesting are valid JSON to Go: not strings, so an error.
        let deep = format!("CMD [{}{}]", "[".repeat(200), "]".repeat(200));
        let e = parse_ast(&deep).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: when using JSON array syntax, arrays must be comprised of strings only"
        );
        // An unterminated array is not JSON: the shell form.
        assert_eq!(dump("CMD [\"a\""), "(cmd \"[\\\"a\\\"\")\n");
    }
}
