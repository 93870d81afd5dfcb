//! The line reader and BuildKit's untyped AST (`frontend/dockerfile/parser`): directives, BOM,
//! CRLF, comments, line continuations, heredoc bodies, the per-keyword line parsers, and the
//! S-expression dump that BuildKit's parser tests print.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Warning};
use crate::lex::Lexer;
pub(crate) use crate::line_parsers::new_node_from_line;

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

/// One argument of a [`Node`]: a string, or a nested instruction (the trigger of ONBUILD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NodeArg {
    /// A plain value.
    Value(String),
    /// A sub-instruction.
    Sub(Box<Node>),
}

/// One instruction as BuildKit's parser sees it before typing: the lower-case keyword, the
/// `--flags`, and the arguments as the keyword's line parser split them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword, lower-cased (`run`).
    pub value: String,
    /// The `--name=value` flags before the arguments, quotes and `\` escapes removed.
    pub flags: Vec<String>,
    /// The arguments.
    pub args: Vec<NodeArg>,
    /// True when the arguments were a JSON array (exec form).
    pub json: bool,
    /// The line as read: continuations joined, comments dropped, not trimmed.
    pub original: String,
    /// First source line (1-based).
    pub start_line: usize,
    /// Last source line, heredoc bodies included.
    pub end_line: usize,
    /// Heredoc bodies that follow the line.
    pub heredocs: Vec<Heredoc>,
}

impl Node {
    /// BuildKit's `Node.Dump()`: `copy ["--from=x"] "src" "dst"` (without the parentheses).
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&go_quote_list(&self.flags));
        }
        for a in &self.args {
            s.push(' ');
            match a {
                NodeArg::Value(v) => s.push_str(&go_quote(v)),
                NodeArg::Sub(n) => {
                    s.push('(');
                    s.push_str(&n.dump());
                    s.push(')');
                }
            }
        }
        s.trim().to_string()
    }

    /// The string arguments, a sub-instruction contributing its keyword and arguments
    /// (BuildKit `nodeArgs`).
    pub fn arg_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.args {
            match a {
                NodeArg::Value(v) => out.push(v.clone()),
                NodeArg::Sub(n) => {
                    out.push(n.value.clone());
                    out.extend(n.arg_strings());
                }
            }
        }
        out
    }

    fn can_contain_heredoc(&self) -> bool {
        let mut node = self;
        if node.value == "onbuild" {
            if let Some(NodeArg::Sub(child)) = node.args.first() {
                node = child;
            }
        }
        matches!(node.value.as_str(), "run" | "copy" | "add") && !node.json
    }
}

/// Go `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_is_print(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Approximates Go `unicode.IsPrint`: no controls, no spaces but U+0020, no format characters
/// or private use.
fn go_is_print(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xF0000..)
}

/// Go `fmt.Sprintf("%q", []string{…})`.
pub(crate) fn go_quote_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

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
    fn check_line(&mut self, line: &str) -> Result<(), String> {
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
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => match value {
                "\\" => self.values.escape = '\\',
                "`" => self.values.escape = '`',
                v => return Err(format!("invalid escape token '{v}' does not match ` or \\")),
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
    /// BuildKit's dump of the whole file: `(node)` per line.
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

fn process_line(d: &mut DirectiveState, raw: &str, strip_left: bool) -> Result<String, String> {
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

/// Reads `src` into nodes, as BuildKit's `parser.Parse`.
///
/// # Errors
///
/// A repeated or invalid directive, a JSON array with non-strings, an unterminated heredoc, a
/// file without instructions.
pub fn parse_ast(src: &str) -> Result<Ast, Error> {
    let src = src.strip_prefix('\u{FEFF}').unwrap_or(src);
    let mut d = DirectiveState::default();
    let mut lines = src.split_inclusive('\n');
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
            let heredocs = heredocs_from_line(&line).map_err(|m| Error::msg(start, m))?;
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

/// BuildKit `heredocsFromLine`: the line is split into shell words (quotes and escapes kept,
/// unset variables left alone) and every word shaped `[n]<<[-]WORD` is a heredoc.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
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
/// A delimiter the shell lexer cannot read.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
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
        .map_err(|e| e.to_string())?
        .words;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = lex
        .raw_quotes(true)
        .expand_words(rest, &none)
        .map_err(|e| e.to_string())?
        .words;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
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
        assert!(parse_ast("# escape=x\nFROM x").is_err());
        let late = parse_ast("# hello\n# escape=`\nFROM x").unwrap();
        assert_eq!(late.directives.escape, '\\');
    }

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
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(
            go_quote("a\"b\\c\n\u{1}é\u{a0}"),
            "\"a\\\"b\\\\c\\n\\x01é\\u00a0\""
        );
    }
}
