//! The JSON arrays of exec forms (`CMD ["a", "b"]`), read the way Go's `encoding/json` reads them
//! into BuildKit's `[]any` (`parser/line_parsers.go`, `parseJSON`).
//!
//! Written by hand because what is JSON differs from `serde_json` at the edges a Dockerfile can
//! reach, and the difference decides between exec form, shell form and an error: Go replaces a
//! lone UTF-16 surrogate escape with U+FFFD where `serde_json` refuses the text, Go nests up to
//! 10,000 levels where `serde_json` stops at 128, and a number beyond `f64` fails Go's decoding.

/// Why a text is not an array of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON to Go (or a number out of range): BuildKit takes the text as the shell form.
    NotJson,
    /// Valid JSON with an element that is not a string: BuildKit refuses the instruction.
    NotStrings,
}

/// Go's `maxNestingDepth` (`encoding/json/scanner.go`).
const MAX_DEPTH: usize = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Array,
    Object,
}

#[derive(Clone, Copy, PartialEq)]
enum Want {
    ValueOrClose,
    Value,
    CommaOrClose,
    KeyOrClose,
    Key,
    Colon,
}

/// Reads `src` (which starts with `[`) as Go's `json.Unmarshal` into `[]any` does, then requires
/// every element to be a string.
pub(crate) fn parse_string_array(src: &str) -> Result<Vec<String>, JsonError> {
    let b = src.as_bytes();
    let mut i = 0;
    skip_ws(b, &mut i);
    if b.get(i) != Some(&b'[') {
        return Err(JsonError::NotJson);
    }
    i += 1;
    let mut stack = vec![Ctx::Array];
    let mut want = Want::ValueOrClose;
    // One entry per element of the outer array: the string, or None for any other value.
    let mut elements: Vec<Option<String>> = Vec::new();
    let mut overflow = false;
    let bad = JsonError::NotJson;
    loop {
        skip_ws(b, &mut i);
        let c = *b.get(i).ok_or(bad)?;
        // The value just completed, if any: `Some(Some(s))` for a string.
        let mut done: Option<Option<String>> = None;
        match want {
            Want::ValueOrClose | Want::Value => match c {
                b']' if want == Want::ValueOrClose => {
                    i += 1;
                    stack.pop();
                    if stack.is_empty() {
                        break;
                    }
                    done = Some(None);
                }
                b'[' | b'{' => {
                    i += 1;
                    stack.push(if c == b'[' { Ctx::Array } else { Ctx::Object });
                    if stack.len() > MAX_DEPTH {
                        return Err(bad);
                    }
                    want = if c == b'[' {
                        Want::ValueOrClose
                    } else {
                        Want::KeyOrClose
                    };
                }
                b'"' => done = Some(Some(string(b, &mut i)?)),
                b'-' | b'0'..=b'9' => {
                    overflow |= number(b, &mut i)?;
                    done = Some(None);
                }
                _ => {
                    let rest = &b[i..];
                    let lit = [&b"true"[..], b"false", b"null"]
                        .into_iter()
                        .find(|l| rest.starts_with(l))
                        .ok_or(bad)?;
                    i += lit.len();
                    done = Some(None);
                }
            },
            Want::CommaOrClose => {
                let ctx = *stack.last().ok_or(bad)?;
                i += 1;
                match (ctx, c) {
                    (Ctx::Array, b',') => want = Want::Value,
                    (Ctx::Object, b',') => want = Want::Key,
                    (Ctx::Array, b']') | (Ctx::Object, b'}') => {
                        stack.pop();
                        if stack.is_empty() {
                            break;
                        }
                        done = Some(None);
                    }
                    _ => return Err(bad),
                }
            }
            Want::KeyOrClose | Want::Key => match c {
                b'}' if want == Want::KeyOrClose => {
                    i += 1;
                    stack.pop();
                    done = Some(None);
                }
                b'"' => {
                    string(b, &mut i)?;
                    want = Want::Colon;
                }
                _ => return Err(bad),
            },
            Want::Colon => {
                if c != b':' {
                    return Err(bad);
                }
                i += 1;
                want = Want::Value;
            }
        }
        if let Some(value) = done {
            if stack.len() == 1 {
                elements.push(value);
            }
            want = Want::CommaOrClose;
        }
    }
    skip_ws(b, &mut i);
    if i != b.len() || overflow {
        return Err(bad);
    }
    elements
        .into_iter()
        .map(|e| e.ok_or(JsonError::NotStrings))
        .collect()
}

/// JSON whitespace: space, tab, newline, carriage return.
fn skip_ws(b: &[u8], i: &mut usize) {
    while matches!(b.get(*i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        *i += 1;
    }
}

/// A string at `b[*i] == '"'`, decoded as Go's `unquote` does.
fn string(b: &[u8], i: &mut usize) -> Result<String, JsonError> {
    let bad = JsonError::NotJson;
    *i += 1;
    let mut out: Vec<u8> = Vec::new();
    loop {
        let c = *b.get(*i).ok_or(bad)?;
        *i += 1;
        match c {
            b'"' => break,
            0..=0x1f => return Err(bad),
            b'\\' => {
                let e = *b.get(*i).ok_or(bad)?;
                *i += 1;
                let simple = match e {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        let first = hex4(b, *i).ok_or(bad)?;
                        *i += 4;
                        let mut ch = char::from_u32(first);
                        if (0xD800..0xE000).contains(&first) {
                            // Go `utf16.DecodeRune`: a high surrogate followed by an escaped
                            // low one is a pair; anything else is U+FFFD and the next escape
                            // is read on its own.
                            let low = (b.get(*i..*i + 2) == Some(b"\\u"))
                                .then(|| hex4(b, *i + 2))
                                .flatten();
                            ch = match low {
                                Some(lo)
                                    if (0xD800..0xDC00).contains(&first)
                                        && (0xDC00..0xE000).contains(&lo) =>
                                {
                                    *i += 6;
                                    char::from_u32(
                                        0x10000 + ((first - 0xD800) << 10) + (lo - 0xDC00),
                                    )
                                }
                                _ => Some(char::REPLACEMENT_CHARACTER),
                            };
                        }
                        let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        continue;
                    }
                    _ => return Err(bad),
                };
                out.push(simple);
            }
            _ => out.push(c),
        }
    }
    // Whole characters of a `str` and encoded escapes only: valid UTF-8.
    String::from_utf8(out).map_err(|_| bad)
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// A number at `b[*i]`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. Returns whether it
/// overflows `f64`, which Go's decoding into `any` reports as an error.
fn number(b: &[u8], i: &mut usize) -> Result<bool, JsonError> {
    let bad = JsonError::NotJson;
    let start = *i;
    let digits = |i: &mut usize| {
        let s = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > s
    };
    if b.get(*i) == Some(&b'-') {
        *i += 1;
    }
    match b.get(*i) {
        Some(b'0') => *i += 1,
        Some(b'1'..=b'9') => {
            digits(i);
        }
        _ => return Err(bad),
    }
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        if !digits(i) {
            return Err(bad);
        }
    }
    if matches!(b.get(*i), Some(b'e' | b'E')) {
        *i += 1;
        if matches!(b.get(*i), Some(b'+' | b'-')) {
            *i += 1;
        }
        if !digits(i) {
            return Err(bad);
        }
    }
    let text = std::str::from_utf8(&b[start..*i]).map_err(|_| bad)?;
    Ok(text.parse::<f64>().map_or(true, f64::is_infinite))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<String>, JsonError> {
        parse_string_array(s)
    }

    #[test]
    fn string_arrays() {
        assert_eq!(p(r#"[ "a" , "b" ]"#).unwrap(), ["a", "b"]);
        assert_eq!(p("[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            p(r#"["\u00e9\n\/\"", "\ud83d\ude00"]"#).unwrap(),
            ["é\n/\"", "😀"]
        );
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(p(r#"["\ud800"]"#).unwrap(), ["\u{fffd}"]);
        assert_eq!(p(r#"["\udc00x"]"#).unwrap(), ["\u{fffd}x"]);
        assert_eq!(p(r#"["\ud800\u0041"]"#).unwrap(), ["\u{fffd}A"]);
    }

    #[test]
    fn valid_json_that_is_not_all_strings() {
        for s in [
            r#"["a", 1]"#,
            r#"[["nested"]]"#,
            r#"[{"a": [1, {}]}, "x"]"#,
            "[true, null, false]",
            "[-0.5e+3]",
        ] {
            assert_eq!(p(s), Err(JsonError::NotStrings), "{s}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(p(&deep), Err(JsonError::NotStrings));
    }

    #[test]
    fn not_json_to_go() {
        for s in [
            "[",
            r#"["a",]"#,
            r#"["a"] x"#,
            "['a']",
            r#"["a" "b"]"#,
            "[01]",
            "[1.]",
            "[+1]",
            r#"["\x"]"#,
            "[\"a\tb\"]",
            r#"[{"a"}]"#,
            r#"[{1: 2}]"#,
            "[1e400]",
            r#"["a", -1e999]"#,
            "[tru]",
            "[}",
            "{}",
        ] {
            assert_eq!(p(s), Err(JsonError::NotJson), "{s}");
        }
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(p(&deeper), Err(JsonError::NotJson));
        assert_eq!(p(&"[".repeat(100_000)), Err(JsonError::NotJson));
    }
}
