//! Go string functions whose exact behaviour BuildKit's AST dump shows: `strconv.Quote`, `%q` of a
//! string list, `strings.ToLower`.

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

/// Go `strconv.IsPrint` (the definition of `unicode.IsPrint`): letters, marks, numbers,
/// punctuation, symbols and the ASCII space. Everything else (controls, format characters, other
/// spaces, separators, private use, unassigned code points) is escaped by `strconv.Quote`.
fn go_is_print(c: char) -> bool {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    c == ' '
        || !matches!(
            get_general_category(c),
            G::Control
                | G::Format
                | G::SpaceSeparator
                | G::LineSeparator
                | G::ParagraphSeparator
                | G::PrivateUse
                | G::Surrogate
                | G::Unassigned
        )
}

/// Go `strings.ToLower`: each character mapped alone by `unicode.ToLower`. Unlike
/// [`str::to_lowercase`], no final-sigma rule (`Σ` is always `σ`) and one character for one
/// (`İ` becomes `i`, the first character of its full lower case).
/// Characters Unicode 15.0 (Go's tables) does not know yet keep their case.
pub(crate) fn go_lower(s: &str) -> String {
    use unicode_general_category::{GeneralCategory, get_general_category};
    s.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_ascii_lowercase()
            } else if get_general_category(c) == GeneralCategory::Unassigned {
                c
            } else {
                c.to_lowercase().next().unwrap_or(c)
            }
        })
        .collect()
}

/// Go `unicode.IsSpace` of a single byte taken as a rune, as BuildKit's byte-wise scanners
/// (`extractBuilderFlags`, `parseHealthConfig`) call it: the ASCII blanks and also 0x85 and 0xA0,
/// which are continuation bytes of UTF-8 sequences such as `à`.
pub(crate) fn go_is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// Go `fmt.Sprintf("%q", []string{…})`.
pub(crate) fn go_quote_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_escapes() {
        assert_eq!(
            go_quote("a\"b\\c\n\u{1}é\u{a0}"),
            "\"a\\\"b\\\\c\\n\\x01é\\u00a0\""
        );
    }

    #[test]
    fn go_lower_maps_each_character_alone() {
        assert_eq!(go_lower("RUN"), "run");
        assert_eq!(go_lower("ΟΔΟΣ"), "οδοσ");
        assert_eq!(go_lower("İX"), "ix");
        // Garay capital letters arrived in Unicode 16: unknown to Go 1.26, so unchanged.
        assert_ne!('\u{10d50}'.to_lowercase().next(), Some('\u{10d50}'));
        assert_eq!(go_lower("\u{10d50}"), "\u{10d50}");
    }

    #[test]
    fn go_quote_escapes_what_go_does_not_print() {
        // Format characters, separators, private use and unassigned code points are escaped;
        // marks, symbols and letters of any script are printed (Go `unicode.IsPrint`).
        assert_eq!(
            go_quote("\u{ad}\u{2028}\u{e000}\u{378}"),
            r#""\u00ad\u2028\ue000\u0378""#
        );
        assert_eq!(go_quote("\u{e0001}\u{10ffff}"), r#""\U000e0001\U0010ffff""#);
        assert_eq!(go_quote("e\u{301}€😀ß\u{7f}"), "\"e\u{301}€😀ß\\x7f\"");
        // Assigned in Unicode 16, which Go 1.26 does not know yet.
        assert_eq!(go_quote("\u{1c89}"), r#""\u1c89""#);
    }
}
