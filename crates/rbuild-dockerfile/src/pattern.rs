//! The shell patterns of `${V#p}`, `${V%p}` and `${V/p/r}`, matched the way BuildKit's
//! `convertShellPatternToRegex` + Go `regexp` match them: `*` is `.*` (greedy or lazy), `?` is
//! `.`, neither crosses a newline (Go's `.` without the `s` flag), everything else is literal, and
//! no bracket expressions.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

/// A compiled shell pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    /// Compiles `pattern`; a `\` escapes `*`, `?` and `\`, and is dropped before `}` and `/`
    /// (which only needed escaping inside `${}`).
    pub(crate) fn compile(pattern: &str) -> Result<Self, String> {
        let mut toks = Vec::new();
        let mut it = pattern.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => {
                    if matches!(it.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match it.next() {
                        Some(n @ ('*' | '?' | '\\')) => toks.push(Tok::Lit(n)),
                        Some(n) => return Err(format!("invalid escape '\\{n}'")),
                        None => return Err("invalid escape '\\\u{FFFD}'".into()),
                    }
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Self { toks })
    }

    /// End of the preferred match starting exactly at `start`, with the preference order of a
    /// backtracking (leftmost-first) engine: greedy stars try the longest span first.
    pub(crate) fn match_at(&self, s: &[char], start: usize, greedy: bool) -> Option<usize> {
        fn go(toks: &[Tok], s: &[char], i: usize, greedy: bool) -> Option<usize> {
            let Some((t, rest)) = toks.split_first() else {
                return Some(i);
            };
            match *t {
                Tok::Lit(c) => (s.get(i) == Some(&c))
                    .then(|| go(rest, s, i + 1, greedy))
                    .flatten(),
                Tok::Any => match s.get(i) {
                    Some(&c) if c != '\n' => go(rest, s, i + 1, greedy),
                    _ => None,
                },
                Tok::Star => {
                    let max = s[i..]
                        .iter()
                        .position(|&c| c == '\n')
                        .map_or(s.len(), |p| i + p);
                    if greedy {
                        (i..=max).rev().find_map(|j| go(rest, s, j, greedy))
                    } else {
                        (i..=max).find_map(|j| go(rest, s, j, greedy))
                    }
                }
            }
        }
        go(&self.toks, s, start, greedy)
    }

    /// Leftmost match at or after `from`: `(start, end)` in chars.
    fn find(&self, s: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=s.len()).find_map(|st| self.match_at(s, st, true).map(|e| (st, e)))
    }
}

/// `${V/p/r}`: the first match replaced by `r` literally (Go `FindStringIndex`).
pub(crate) fn replace_first(re: &Pattern, value: &str, replacement: &str) -> String {
    let s: Vec<char> = value.chars().collect();
    match re.find(&s, 0) {
        Some((a, b)) => {
            let mut out: String = s[..a].iter().collect();
            out.push_str(replacement);
            out.extend(&s[b..]);
            out
        }
        None => value.to_string(),
    }
}

/// `${V//p/r}`: Go `ReplaceAllString`, including its `$0`/`${name}` template expansion and its
/// rule that an empty match right after a previous match is not replaced.
pub(crate) fn replace_all(re: &Pattern, value: &str, replacement: &str) -> String {
    let s: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= s.len() {
        let Some((a, b)) = re.find(&s, search) else {
            break;
        };
        out.extend(&s[last_end..a]);
        if b > last_end || a == 0 {
            expand_template(&mut out, replacement, &s[a..b]);
        }
        last_end = b;
        search = if search + 1 > b { search + 1 } else { b };
    }
    out.extend(&s[last_end.min(s.len())..]);
    out
}

/// Go's `Regexp.Expand` for a pattern without capture groups: `$$` is `$`, `$0`/`${0}` the
/// match, any other well-formed reference is empty, a malformed one is kept as text.
fn expand_template(out: &mut String, template: &str, matched: &[char]) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let is_name = |c: char| c.is_alphanumeric() || c == '_';
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(end) if end > 0 && r[..end].chars().all(is_name) => (&r[..end], &r[end + 1..]),
                _ => ("", rest),
            }
        } else {
            let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            out.push('$');
            continue;
        }
        if name.bytes().all(|b| b.is_ascii_digit()) && name.parse::<u64>() == Ok(0) {
            out.extend(matched);
        }
        rest = after;
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn lazy_and_greedy_prefix() {
        let p = Pattern::compile("*/").unwrap();
        assert_eq!(p.match_at(&chars("/a/b"), 0, false), Some(1));
        assert_eq!(p.match_at(&chars("/a/b"), 0, true), Some(3));
    }

    #[test]
    fn star_does_not_cross_newline() {
        let p = Pattern::compile("a*b").unwrap();
        assert_eq!(p.match_at(&chars("a\nb"), 0, true), None);
    }

    #[test]
    fn escapes() {
        assert!(Pattern::compile("\\x").is_err());
        let p = Pattern::compile("\\*").unwrap();
        assert_eq!(p.match_at(&chars("*a"), 0, true), Some(1));
        assert_eq!(p.match_at(&chars("aa"), 0, true), None);
    }

    #[test]
    fn replace_all_like_go() {
        let p = Pattern::compile("a").unwrap();
        assert_eq!(replace_all(&p, "banana", "o"), "bonono");
        // Go: regexp.MustCompile(".*").ReplaceAllString("abc", "-") == "-": the empty match at
        // the end abuts the previous match and is skipped.
        let star = Pattern::compile("*").unwrap();
        assert_eq!(replace_all(&star, "abc", "-"), "-");
        assert_eq!(replace_all(&star, "", "-"), "-");
        assert_eq!(replace_all(&star, "a\nb", "-"), "-\n-");
        assert_eq!(replace_all(&p, "ab", "[$0$$]"), "[a$]b");
        assert_eq!(replace_all(&p, "ab", "$x."), ".b");
    }

    #[test]
    fn replace_first_is_literal() {
        let p = Pattern::compile("a").unwrap();
        assert_eq!(replace_first(&p, "banana", "$0"), "b$0nana");
    }
}
