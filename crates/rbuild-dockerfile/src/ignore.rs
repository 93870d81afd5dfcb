//! `.dockerignore` (moby `dockerignore.ReadAll` + `patternmatcher`): which context paths are
//! left out of the build context.

use serde::Serialize;

/// A malformed `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// A line holds only `!`.
    #[error("line {line}: illegal exclusion pattern: \"!\"")]
    BareExclusion {
        /// 1-based line.
        line: usize,
    },
    /// The pattern is not a valid `filepath.Match` pattern (unclosed `[`, trailing `\`).
    #[error("line {line}: syntax error in pattern {pattern:?}")]
    BadPattern {
        /// 1-based line.
        line: usize,
        /// The pattern after cleaning.
        pattern: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Glob,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    NotSlash,
    NotSlashStar,
    AnyStar,
    DirStar,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One pattern of a `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnorePattern {
    /// The pattern, cleaned (`filepath.Clean`, leading `/` dropped), without its `!`.
    pub pattern: String,
    /// True for a `!pattern` line, which re-includes what earlier lines excluded.
    pub exclusion: bool,
    #[serde(skip)]
    match_type: MatchType,
    #[serde(skip)]
    toks: Vec<Tok>,
}

/// Parsed `.dockerignore` patterns.
///
/// ```
/// use rbuild_dockerfile::Ignore;
///
/// let ig = Ignore::parse("# comment\nnode_modules\n**/*.log\n!keep.log\n/target\n").unwrap();
/// assert!(ig.is_excluded("node_modules/x/y.js"));
/// assert!(ig.is_excluded("a/b/debug.log"));
/// assert!(!ig.is_excluded("keep.log"));
/// assert!(ig.is_excluded("./target/debug"));
/// assert!(!ig.is_excluded("src/main.rs"));
/// assert!(!ig.may_have_exceptions_under("node_modules"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ignore {
    patterns: Vec<IgnorePattern>,
}

/// Go `path.Clean` on a slash-separated path.
fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

impl Ignore {
    /// Reads a `.dockerignore`: `#` at the very start of a line is a comment, lines are trimmed,
    /// `!` marks an exception, paths are cleaned and made relative.
    ///
    /// # Errors
    ///
    /// [`IgnoreError`] for a bare `!` or a malformed bracket expression.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
            }
            if p.is_empty() {
                return Err(IgnoreError::BareExclusion { line });
            }
            let mut cleaned = clean(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let (match_type, toks) = compile(&cleaned).ok_or_else(|| IgnoreError::BadPattern {
                line,
                pattern: cleaned.clone(),
            })?;
            patterns.push(IgnorePattern {
                pattern: cleaned,
                exclusion,
                match_type,
                toks,
            });
        }
        Ok(Ignore { patterns })
    }

    /// The patterns in file order.
    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    /// True when `rel_path` (relative to the context, `/`-separated) is left out: the last
    /// pattern that matches it or one of its parent directories decides (moby
    /// `MatchesOrParentMatches`).
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let mut path = clean(rel_path);
        if path.len() > 1 && path.starts_with('/') {
            path.remove(0);
        }
        let parent_dirs: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion cannot change an already excluded path, nor an exception an
            // included one.
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&path);
            if !m {
                for i in 0..parent_dirs.len() {
                    if p.matches(&parent_dirs[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// False when no `!` exception can re-include anything below the directory `dir`, so a
    /// walker that found `dir` excluded may skip it whole.
    pub fn may_have_exceptions_under(&self, dir: &str) -> bool {
        let mut d = clean(dir);
        if d.starts_with('/') {
            d.remove(0);
        }
        let d = format!("{d}/");
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            let lit_end = p
                .pattern
                .find(['*', '?', '[', '\\'])
                .unwrap_or(p.pattern.len());
            let lit = &p.pattern[..lit_end];
            lit.is_empty() || lit.starts_with(&d) || d.starts_with(lit)
        })
    }
}

impl IgnorePattern {
    fn matches(&self, path: &str) -> bool {
        let pat = &self.pattern;
        match self.match_type {
            MatchType::Exact => path == pat,
            MatchType::Prefix => path.starts_with(&pat[..pat.len() - 2]),
            MatchType::Suffix => {
                let suffix = &pat[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            MatchType::Glob => {
                let chars: Vec<char> = path.chars().collect();
                glob_match(&self.toks, &chars)
            }
        }
    }
}

/// moby `Pattern.compile`: `*` is `[^/]*`, `?` is `[^/]`, `**` is `(.*/)?` (or `.*` at the
/// end), `\` escapes, `[…]` is a character class.
fn compile(pattern: &str) -> Option<(MatchType, Vec<Tok>)> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut mt = MatchType::Exact;
    let mut i = 0;
    let mut iter = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if mt == MatchType::Exact {
                        mt = MatchType::Prefix;
                    } else {
                        toks.push(Tok::AnyStar);
                        mt = MatchType::Glob;
                    }
                } else {
                    toks.push(Tok::DirStar);
                    mt = MatchType::Glob;
                }
                if iter == 0 {
                    mt = MatchType::Suffix;
                }
            }
            '*' => {
                toks.push(Tok::NotSlashStar);
                mt = MatchType::Glob;
            }
            '?' => {
                toks.push(Tok::NotSlash);
                mt = MatchType::Glob;
            }
            '\\' => {
                // filepath.Match rejects a trailing backslash.
                let n = *chars.get(i)?;
                i += 1;
                toks.push(Tok::Lit(n));
                mt = MatchType::Glob;
            }
            '[' => {
                let mut negated = false;
                if matches!(chars.get(i), Some('^')) {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    let mut c = *chars.get(i)?;
                    i += 1;
                    if c == ']' && !ranges.is_empty() {
                        break;
                    }
                    if c == '\\' {
                        c = *chars.get(i)?;
                        i += 1;
                    }
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&e| e != ']') {
                        let e = chars[i + 1];
                        i += 2;
                        if e < c {
                            return None;
                        }
                        ranges.push((c, e));
                    } else {
                        ranges.push((c, c));
                    }
                }
                toks.push(Tok::Class { negated, ranges });
                mt = MatchType::Glob;
            }
            c => toks.push(Tok::Lit(c)),
        }
        iter += 1;
    }
    if mt == MatchType::Prefix && !pattern.ends_with("**") {
        mt = MatchType::Glob;
    }
    Some((mt, toks))
}

fn glob_match(toks: &[Tok], s: &[char]) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match t {
        Tok::Lit(c) => s.first() == Some(c) && glob_match(rest, &s[1..]),
        Tok::NotSlash => s.first().is_some_and(|&c| c != '/') && glob_match(rest, &s[1..]),
        Tok::Class { negated, ranges } => {
            s.first()
                .is_some_and(|&c| ranges.iter().any(|&(a, b)| a <= c && c <= b) != *negated)
                && glob_match(rest, &s[1..])
        }
        Tok::NotSlashStar => {
            let max = s.iter().position(|&c| c == '/').unwrap_or(s.len());
            (0..=max).any(|k| glob_match(rest, &s[k..]))
        }
        Tok::AnyStar => {
            // Go regexp `.` does not match a newline.
            let max = s.iter().position(|&c| c == '\n').unwrap_or(s.len());
            (0..=max).any(|k| glob_match(rest, &s[k..]))
        }
        Tok::DirStar => {
            if glob_match(rest, s) {
                return true;
            }
            let max = s.iter().position(|&c| c == '\n').unwrap_or(s.len());
            (1..=max).any(|k| s[k - 1] == '/' && glob_match(rest, &s[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(rules: &str, path: &str) -> bool {
        Ignore::parse(rules).unwrap().is_excluded(path)
    }

    #[test]
    fn basic_and_parent_matching() {
        assert!(ex("foo", "foo"));
        assert!(ex("foo", "foo/bar/baz"));
        assert!(!ex("foo", "foobar"));
        assert!(ex("*.md", "README.md"));
        assert!(!ex("*.md", "docs/x.md"));
        assert!(ex("*/*.md", "docs/x.md"));
        assert!(ex("dir/?", "dir/a"));
        assert!(!ex("dir/?", "dir/ab"));
    }

    #[test]
    fn double_star_forms() {
        assert!(ex("**/*.go", "a/b/c.go"));
        assert!(ex("**/*.go", "c.go"));
        assert!(ex("**", "anything/at/all"));
        assert!(ex("a/**/b", "a/b"));
        assert!(ex("a/**/b", "a/x/y/b"));
        assert!(ex("**/node_modules", "x/node_modules/y"));
        assert!(ex("build/**", "build/out"));
    }

    #[test]
    fn exceptions_and_order() {
        let rules = "*.log\n!important.log\n";
        assert!(ex(rules, "a.log"));
        assert!(!ex(rules, "important.log"));
        assert!(ex("!a\na", "a"));
        assert!(!ex("docs\n!docs/keep.md", "docs/keep.md"));
        assert!(ex("docs\n!docs/keep.md", "docs/other.md"));
    }

    #[test]
    fn cleaning_and_comments() {
        assert!(ex("/foo/../bar/", "bar/x"));
        assert!(ex("./a", "./a"));
        assert!(!ex("# a\n", "# a"));
        assert!(ex(" # a", "# a"));
        assert!(ex("[a-c]x", "bx"));
        assert!(!ex("[^a-c]x", "bx"));
        assert!(ex("a\\*b", "a*b"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Ignore::parse("a\n!\n").unwrap_err().to_string(),
            "line 2: illegal exclusion pattern: \"!\""
        );
        assert!(Ignore::parse("[abc").is_err());
        assert!(Ignore::parse("abc\\").is_err());
    }

    #[test]
    fn exceptions_under() {
        let ig = Ignore::parse("vendor\n!vendor/keep\n!*.md\n").unwrap();
        assert!(ig.may_have_exceptions_under("vendor"));
        let ig = Ignore::parse("vendor\n!src/keep\n").unwrap();
        assert!(!ig.may_have_exceptions_under("vendor"));
        assert!(ig.may_have_exceptions_under("src"));
    }
}
