//! BuildKit's per-keyword line parsers (`parser/line_parsers.go`, `split_command.go`): the
//! keyword, the `--flags`, and the arguments split the way each instruction wants them.

use crate::error::ErrorKind;
use crate::gojson::{JsonError, parse_string_array};
use crate::gostr::{go_is_space_byte, go_lower, go_quote};
use crate::node::{Node, NodeArg};

/// Splits the keyword, the flags and the rest, then runs the keyword's line parser.
pub(crate) fn new_node_from_line(line: &str, escape: char) -> Result<Node, ErrorKind> {
    let (cmd, flags, rest) = split_command(line, escape);
    let syntax = ErrorKind::Syntax;
    let (args, json) = match cmd.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(&rest).map_err(syntax)?,
        "arg" => (values(parse_words(&rest, escape)), false),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(&rest).map_err(syntax)?,
        "env" => (parse_name_val(&rest, "ENV", escape).map_err(syntax)?, false),
        "label" => (
            parse_name_val(&rest, "LABEL", escape).map_err(syntax)?,
            false,
        ),
        "expose" | "from" => (values(split_whitespace(&rest)), false),
        "healthcheck" => parse_health_config(&rest).map_err(syntax)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            (values((!rest.is_empty()).then_some(rest.clone())), false)
        }
        "onbuild" => {
            if rest.is_empty() {
                (Vec::new(), false)
            } else {
                let child = new_node_from_line(&rest, escape)?;
                (vec![NodeArg::Sub(Box::new(child))], false)
            }
        }
        // BuildKit's parseIgnore: an unknown keyword keeps one empty argument; the typed layer
        // rejects it.
        _ => (vec![NodeArg::Value(String::new())], false),
    };
    Ok(Node {
        value: cmd,
        flags,
        args,
        json,
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        heredocs: Vec::new(),
    })
}

fn values(v: impl IntoIterator<Item = String>) -> Vec<NodeArg> {
    v.into_iter().map(NodeArg::Value).collect()
}

fn is_token_ws(c: char) -> bool {
    // BuildKit `reWhitespace` / `tokenWhitespace`: [\t\v\f\r ]+
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn split_whitespace(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_token_ws)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_token_ws) {
        Some(i) => (
            &trimmed[..i],
            Some(trimmed[i..].trim_start_matches(is_token_ws)),
        ),
        None => (trimmed, None),
    };
    let (rest, flags) = match rest {
        Some(r) => extract_builder_flags(r, escape),
        None => (String::new(), Vec::new()),
    };
    (go_lower(cmd), flags, rest.trim().to_string())
}

/// BuildKit `extractBuilderFlags`: leading words that start with `--`, quotes removed, the
/// escape token escaping the next character; `--` alone ends the flags. Returns the rest and
/// the flags.
///
/// BuildKit scans this part byte by byte and appends each byte as a rune of its own, so a
/// non-ASCII character in a flag comes out as its bytes read as Latin-1 (`--chown=jürgen` is
/// the flag `--chown=jÃ¼rgen`), and the bytes 0x85 and 0xA0 end a word. The dump shows that, so
/// it is kept. Where such a byte splits a character, the broken rest becomes U+FFFD here (BuildKit
/// keeps the raw bytes).
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes = line.as_bytes();
    let rest_from = |pos: usize| String::from_utf8_lossy(&bytes[pos..]).into_owned();
    // Only `\` and `` ` `` are possible escape tokens, both ASCII.
    let esc = u8::try_from(escape).unwrap_or(b'\\');
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= bytes.len() {
        let at_end = pos == bytes.len();
        let ch = bytes.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if go_is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || bytes.get(pos + 1) != Some(&b'-') {
                return (rest_from(pos), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if go_is_space_byte(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest_from(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == esc {
                if pos + 1 == bytes.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = bytes[pos];
            }
            word.push(char::from(c));
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == esc {
            if pos + 1 == bytes.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = bytes[pos];
        }
        word.push(char::from(c));
        pos += 1;
    }
    (String::new(), words)
}

/// BuildKit `parseWords`: whitespace-separated words, quotes and escapes kept for the later
/// expansion step.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut sb = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !sb.is_empty() {
                words.push(sb);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !sb.is_empty() {
                    words.push(std::mem::take(&mut sb));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                sb.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            sb.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote: the closing quote is kept; escapes work except inside single quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            sb.push(ch);
            ch = chars[pos];
        }
        sb.push(ch);
        pos += 1;
    }
    words
}

/// ENV and LABEL: `k=v …`, or the legacy `k v` form when the first word has no `=`.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<NodeArg>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_token_ws) else {
            return Err(format!("{key} must have two arguments"));
        };
        let value = rest[i..].trim_start_matches(is_token_ws);
        return Ok(values([
            rest[..i].to_string(),
            value.to_string(),
            String::new(),
        ]));
    }
    let mut out = Vec::new();
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(w)
            ));
        };
        out.extend(values([k.to_string(), v.to_string(), "=".to_string()]));
    }
    Ok(out)
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit `parseJSON`: leading blanks (Go `unicode.IsSpace`) skipped, then a JSON array.
fn parse_json(rest: &str) -> Result<Vec<String>, JsonError> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Err(JsonError::NotJson);
    }
    parse_string_array(rest)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<NodeArg>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Ok(v) => Ok((values(v), true)),
        Err(JsonError::NotStrings) => Err(NOT_STRINGS.into()),
        Err(JsonError::NotJson) => Ok((values([rest.to_string()]), false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<NodeArg>, bool), String> {
    match parse_json(rest) {
        Ok(v) => Ok((values(v), true)),
        Err(JsonError::NotStrings) => Err(NOT_STRINGS.into()),
        Err(JsonError::NotJson) => Ok((values(split_whitespace(rest)), false)),
    }
}

/// BuildKit `parseHealthConfig`: the type word, then the command as RUN takes it. BuildKit finds
/// the end of the type byte by byte (see [`extract_builder_flags`] for what that means beyond
/// ASCII).
fn parse_health_config(rest: &str) -> Result<(Vec<NodeArg>, bool), String> {
    let bytes = rest.as_bytes();
    let sep = bytes
        .iter()
        .position(|&b| go_is_space_byte(b))
        .unwrap_or(bytes.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let next = bytes[sep..]
        .iter()
        .position(|&b| !go_is_space_byte(b))
        .map_or(bytes.len(), |n| sep + n);
    let typ = String::from_utf8_lossy(&bytes[..sep]).into_owned();
    let (mut cmd, json) = parse_maybe_json(&String::from_utf8_lossy(&bytes[next..]))?;
    let mut out = vec![NodeArg::Value(typ)];
    out.append(&mut cmd);
    Ok((out, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_extraction() {
        let (rest, flags) = extract_builder_flags("--a=1 --b='x y' -- --c d", '\\');
        assert_eq!(flags, ["--a=1", "--b=x y"]);
        assert_eq!(rest, " --c d");
        let (rest, flags) = extract_builder_flags("--mount=type=cache", '\\');
        assert_eq!((rest.as_str(), flags.len()), ("", 1));
    }

    #[test]
    fn flags_use_the_escape_token_of_the_file() {
        // With `# escape=``, a backslash in a flag is an ordinary character.
        let (_, flags) = extract_builder_flags("--from=a\\b x y", '`');
        assert_eq!(flags, ["--from=a\\b"]);
        let (_, flags) = extract_builder_flags("--from=a`\"b x y", '`');
        assert_eq!(flags, ["--from=a\"b"]);
        let (_, flags) = extract_builder_flags("--from=a\\b x y", '\\');
        assert_eq!(flags, ["--from=ab"]);
    }

    #[test]
    fn flags_are_scanned_byte_by_byte_like_buildkit() {
        // Each byte becomes a rune of its own.
        let (rest, flags) = extract_builder_flags("--chown=jürgen x y", '\\');
        assert_eq!(
            (flags[0].as_str(), rest.as_str()),
            ("--chown=jÃ¼rgen", "x y")
        );
        // U+2003 is a space to Rust but none of its bytes is one to the byte-wise scan.
        let (rest, flags) = extract_builder_flags("--a=x\u{2003}y z", '\\');
        assert_eq!(
            (flags[0].as_str(), rest.as_str()),
            ("--a=x\u{e2}\u{80}\u{83}y", "z")
        );
        // The second byte of `à` (0xA0) ends the word.
        let (rest, flags) = extract_builder_flags("--a=à b", '\\');
        assert_eq!((flags[0].as_str(), rest.as_str()), ("--a=Ã", "b"));
    }

    #[test]
    fn healthcheck_type_ends_at_a_space_byte() {
        let node = new_node_from_line("HEALTHCHECK CMD\u{2003}x  y", '\\').unwrap();
        // (and strconv.Quote escapes it: a space separator is not printable to Go)
        assert_eq!(node.dump(), r#"healthcheck "CMD\u2003x" "y""#);
        let node = new_node_from_line("HEALTHCHECK CMDà x", '\\').unwrap();
        assert_eq!(node.dump(), "healthcheck \"CMD\u{fffd}\" \"x\"");
    }

    #[test]
    fn keyword_is_lowered_like_go() {
        let node = new_node_from_line("RUNΣ x", '\\').unwrap();
        assert_eq!(node.value, "runσ");
        assert_eq!(node.dump(), "runσ \"\"");
    }
}
