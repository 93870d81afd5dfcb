//! BuildKit's shell lexer (`frontend/dockerfile/shell/lex.go`): quote removal, escapes, word
//! splitting and `$VAR` / `${VAR…}` expansion, with the variables used and unset reported.
//!
//! This is not a POSIX shell: it does what BuildKit does, quirks included (an empty quoted word
//! `""` vanishes from word lists, `${V/p/r}` patterns are Go regular expressions without `.`
//! matching a newline, a trailing escape character is dropped).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::pattern::{self, Pattern};

/// Why a word could not be expanded. Messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// A quote or `${` is not closed before the end of the word.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(String),
    /// `${name` without its `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${name/pattern` without the `/` that starts the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:x}`, `${{x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${name@x}` and other operators BuildKit does not know.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${name?msg}` / `${name:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The user's message, or BuildKit's default.
        message: String,
    },
    /// `${…}` nested more than 128 deep (BuildKit recurses without a limit and overflows its
    /// stack instead).
    #[error("variable substitutions nested more than {MAX_NESTING} deep")]
    TooDeep,
    /// A `#`, `%` or `/` pattern with an invalid escape.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The result of expanding one word with [`Lexer::expand_word`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expansion {
    /// The word after quote removal and expansion.
    pub value: String,
    /// Variables that were looked up and found.
    pub used: BTreeSet<String>,
    /// Variables that were looked up and not set.
    pub unset: BTreeSet<String>,
}

/// The result of [`Lexer::expand_words`]: the word split into fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Words {
    /// The fields, split on unquoted whitespace after expansion.
    pub words: Vec<String>,
    /// Variables that were looked up and found.
    pub used: BTreeSet<String>,
    /// Variables that were looked up and not set.
    pub unset: BTreeSet<String>,
}

/// BuildKit's shell lexer for one escape character.
///
/// ```
/// use rbuild_dockerfile::Lexer;
///
/// let lex = Lexer::new('\\');
/// let vars = |name: &str| (name == "V").then(|| "1.2.3".to_string());
/// let e = lex.expand_word("app-${V%.*}-\"${X:-none}\"", &vars).unwrap();
/// assert_eq!(e.value, "app-1.2-none");
/// assert!(e.unset.contains("X"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the Dockerfile's escape character (`\` or `` ` ``).
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Keeps quote characters in the output (BuildKit `RawQuotes`).
    #[must_use]
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keeps escape characters in the output (BuildKit `RawEscapes`).
    #[must_use]
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Treats quotes as ordinary characters (BuildKit `SkipProcessQuotes`, used for heredoc bodies).
    #[must_use]
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Leaves references to unset variables as written (BuildKit `SkipUnsetEnv`).
    #[must_use]
    pub fn skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Expands `word` into one string (BuildKit `ProcessWord`): quotes removed, escapes applied,
    /// whitespace kept.
    ///
    /// # Errors
    ///
    /// [`ExpandError`] for unterminated quotes or braces, bad substitutions and `${V:?msg}`.
    pub fn expand_word(
        &self,
        word: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Expansion, ExpandError> {
        let mut sw = ShellWord::new(self, word, vars);
        let (value, _) = sw.process_stop_on(None, self.raw_escapes)?;
        Ok(Expansion {
            value,
            used: sw.used,
            unset: sw.unset,
        })
    }

    /// Expands `word` and splits it into fields (BuildKit `ProcessWords`): splitting happens
    /// after expansion, on unquoted whitespace, including whitespace inside variable values.
    ///
    /// # Errors
    ///
    /// As [`Lexer::expand_word`].
    pub fn expand_words(
        &self,
        word: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Words, ExpandError> {
        let mut sw = ShellWord::new(self, word, vars);
        let (_, words) = sw.process_stop_on(None, self.raw_escapes)?;
        Ok(Words {
            words,
            used: sw.used,
            unset: sw.unset,
        })
    }
}

/// Word accumulator of `ProcessWords` (BuildKit `wordsStruct`).
#[derive(Default)]
struct WordsBuf {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl WordsBuf {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        // An empty quoted word ("") sets in_word but adds nothing: BuildKit drops it.
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// How deep `${…}` may nest; real Dockerfiles use two or three levels.
pub(crate) const MAX_NESTING: usize = 128;

struct ShellWord<'a> {
    depth: usize,
    lex: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn Fn(&str) -> Option<String>,
    raw_escapes: bool,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

impl<'a> ShellWord<'a> {
    fn new(lex: &'a Lexer, word: &str, vars: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            depth: 0,
            lex,
            chars: word.chars().collect(),
            pos: 0,
            vars,
            raw_escapes: lex.raw_escapes,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match (self.vars)(name) {
            Some(v) => {
                self.used.insert(name.to_string());
                Some(v)
            }
            None => {
                self.unset.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        // Each nested `${…}` word comes through here: bound the recursion.
        if self.depth >= MAX_NESTING {
            return Err(ExpandError::TooDeep);
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = WordsBuf::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            let special = ch == '$' || (!self.lex.skip_process_quotes && (ch == '\'' || ch == '"'));
            if special {
                let tmp = match ch {
                    '$' => self.process_dollar()?,
                    '\'' => self.process_single_quote()?,
                    _ => self.process_double_quote()?,
                };
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            self.pos += 1;
            if ch == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                // The escape character escapes the next one, except at the end of the word.
                let Some(esc) = self.next() else { break };
                words.add_raw_char(esc);
                result.push(esc);
            } else {
                words.add_char(ch);
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(ExpandError::Unterminated(stop.to_string()));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        // POSIX sh: single quotes keep every character literally; a ' cannot be escaped inside.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandError::Unterminated("single-quote".into())),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ExpandError> {
        // POSIX sh: inside double quotes only $, the escape character and " stay special.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandError::Unterminated("double-quote".into())),
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // A lone escape at the end of the word is dropped.
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += 1;
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let mut ch = self.next();
        // Go renders the scanner's EOF as U+FFFD in this message.
        let mut chs: String = ch.unwrap_or('\u{FFFD}').to_string();
        let mut null_is_unset = false;
        match ch {
            Some('}') => {
                return Ok(match self.get_env(&name) {
                    Some(v) => v,
                    None if self.lex.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                });
            }
            Some('/') => return self.process_replace(&name),
            Some(':') => {
                null_is_unset = true;
                ch = self.next();
                chs.push(ch.unwrap_or('\u{FFFD}'));
            }
            Some('+' | '-' | '?' | '#' | '%') => {}
            _ => return Err(ExpandError::UnsupportedModifier(chs)),
        }
        let raw = matches!(ch, Some('#' | '%'));
        let mut word = match self.process_stop_on(Some('}'), raw) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err(ExpandError::MissingBrace),
            Err(e) => return Err(e),
        };
        let value = self.get_env(&name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let empty = value.as_deref().is_none_or(str::is_empty);
        match ch {
            Some('-') => Ok(match value {
                Some(v) if !(null_is_unset && v.is_empty()) => v,
                _ => word,
            }),
            Some('+') => Ok(if value.is_none() || (null_is_unset && empty) {
                String::new()
            } else {
                word
            }),
            Some('?') => match value {
                None => Err(required(name, word, "is not allowed to be unset")),
                Some(v) if null_is_unset && v.is_empty() => {
                    Err(required(name, word, "is not allowed to be empty"))
                }
                Some(v) => Ok(v),
            },
            Some(op @ ('%' | '#')) => {
                // `%`/`#` remove the shortest match, `%%`/`##` the longest.
                let greedy = word.starts_with(op);
                if greedy {
                    word.remove(0);
                }
                let value = value.unwrap_or_default();
                if op == '%' {
                    trim_suffix(&word, &value, greedy)
                } else {
                    trim_prefix(&word, &value, greedy)
                }
            }
            _ => Err(ExpandError::UnsupportedModifier(chs)),
        }
    }

    fn process_replace(&mut self, name: &str) -> Result<String, ExpandError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.pos += 1;
        }
        let pattern = match self.process_stop_on(Some('/'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err(ExpandError::MissingSlash),
            Err(e) => return Err(e),
        };
        let replacement = match self.process_stop_on(Some('}'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err(ExpandError::MissingBrace),
            Err(e) => return Err(e),
        };
        let Some(value) = self.get_env(name) else {
            if self.lex.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let re = compile(&pattern)?;
        Ok(if replace_all {
            pattern::replace_all(&re, &value, &replacement)
        } else {
            pattern::replace_first(&re, &value, &replacement)
        })
    }

    fn process_name(&mut self) -> String {
        // Names are letters, digits and `_`; a leading digit reads only digits ($1), and the
        // special parameters of POSIX sh (XCU 2.5.2) are one character.
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }
}

fn required(name: String, word: String, default: &str) -> ExpandError {
    let message = if word.is_empty() {
        default.to_string()
    } else {
        word
    };
    ExpandError::Required { name, message }
}

fn compile(pattern: &str) -> Result<Pattern, ExpandError> {
    Pattern::compile(pattern).map_err(|reason| ExpandError::InvalidPattern {
        pattern: pattern.to_string(),
        reason,
    })
}

fn trim_prefix(word: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    let re = compile(word)?;
    let chars: Vec<char> = value.chars().collect();
    Ok(match re.match_at(&chars, 0, greedy) {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_string(),
    })
}

fn trim_suffix(word: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    // Regular expressions cannot find the shortest rightmost match, so BuildKit reverses both
    // the pattern (keeping escape pairs in order) and the value, and trims a prefix.
    let pattern = reverse_pattern(word);
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&pattern, &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

fn reverse_pattern(pattern: &str) -> String {
    let runes: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(runes.len());
    let mut i = 0;
    while i < runes.len() {
        if runes[i] == '\\' && i + 1 < runes.len() {
            out.push([runes[i], runes[i + 1]]);
            i += 2;
        } else {
            out.push([runes[i], '\0']);
            i += 1;
        }
    }
    out.iter()
        .rev()
        .flat_map(|p| p.iter().copied().filter(|&c| c != '\0').collect::<Vec<_>>())
        .collect()
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut word = String::from("x");
        for _ in 0..20_000 {
            word = format!("${{A:-{word}}}");
        }
        let lex = Lexer::new('\\');
        let r = lex.expand_word(&word, &|_| None);
        assert_eq!(r.unwrap_err(), ExpandError::TooDeep);
        let ok = "${A:-${B:-${C:-deep}}}";
        assert_eq!(lex.expand_word(ok, &|_| None).unwrap().value, "deep");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn word(w: &str) -> Result<String, ExpandError> {
        let vars = env(&[
            ("V", "value"),
            ("E", ""),
            ("P", "/usr/local/bin"),
            ("S", "a b  c"),
        ]);
        Lexer::new('\\').expand_word(w, &vars).map(|e| e.value)
    }

    fn words(w: &str) -> Vec<String> {
        let vars = env(&[("S", "a b  c"), ("V", "value")]);
        Lexer::new('\\')
            .expand_words(w, &vars)
            .map(|e| e.words)
            .unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(word("$V").unwrap(), "value");
        assert_eq!(word("${V}x").unwrap(), "valuex");
        assert_eq!(word("$Vx").unwrap(), "");
        assert_eq!(word("$").unwrap(), "$");
        assert_eq!(word("a$").unwrap(), "a$");
        assert_eq!(word("$1x").unwrap(), "x");
    }

    #[test]
    fn default_alternative_and_required_operators() {
        assert_eq!(word("${U:-w}").unwrap(), "w");
        assert_eq!(word("${E:-w}").unwrap(), "w");
        assert_eq!(word("${E-w}").unwrap(), "");
        assert_eq!(word("${U-w}").unwrap(), "w");
        assert_eq!(word("${V:+w}").unwrap(), "w");
        assert_eq!(word("${E:+w}").unwrap(), "");
        assert_eq!(word("${E+w}").unwrap(), "w");
        assert_eq!(word("${U+w}").unwrap(), "");
        assert_eq!(word("${V:?msg}").unwrap(), "value");
        assert_eq!(word("${U?gone}").unwrap_err().to_string(), "U: gone");
        assert_eq!(
            word("${U:?}").unwrap_err().to_string(),
            "U: is not allowed to be unset"
        );
        assert_eq!(
            word("${E:?}").unwrap_err().to_string(),
            "E: is not allowed to be empty"
        );
        assert_eq!(word("${E?}").unwrap(), "");
    }

    #[test]
    fn prefix_and_suffix_removal() {
        assert_eq!(word("${P#*/}").unwrap(), "usr/local/bin");
        assert_eq!(word("${P##*/}").unwrap(), "bin");
        assert_eq!(word("${P%/*}").unwrap(), "/usr/local");
        assert_eq!(word("${P%%/*}").unwrap(), "");
        assert_eq!(word("${V#v?l}").unwrap(), "ue");
        assert_eq!(word("${V%x}").unwrap(), "value");
    }

    #[test]
    fn replacement() {
        assert_eq!(word("${P/\\//:}").unwrap(), ":usr/local/bin");
        assert_eq!(word("${P//\\//:}").unwrap(), ":usr:local:bin");
        assert_eq!(word("${V/a*/X}").unwrap(), "vX");
        assert_eq!(word("${U/a/b}").unwrap(), "");
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            word("${V").unwrap_err(),
            ExpandError::UnsupportedModifier("\u{FFFD}".into())
        );
        assert_eq!(word("${").unwrap_err(), ExpandError::MissingBrace);
        assert_eq!(word("${}").unwrap_err(), ExpandError::BadSubstitution);
        assert_eq!(word("${:-a}").unwrap_err(), ExpandError::BadSubstitution);
        assert_eq!(word("${V:-a").unwrap_err(), ExpandError::MissingBrace);
        assert_eq!(
            word("${V@a}").unwrap_err().to_string(),
            "unsupported modifier (@) in substitution"
        );
        assert_eq!(
            word("${V:x}").unwrap_err().to_string(),
            "unsupported modifier (:x) in substitution"
        );
        assert_eq!(word("${V/a").unwrap_err(), ExpandError::MissingSlash);
        assert_eq!(
            word("'abc").unwrap_err().to_string(),
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(
            word("\"abc").unwrap_err().to_string(),
            "unexpected end of statement while looking for matching double-quote"
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word("'$V'").unwrap(), "$V");
        assert_eq!(word("\"$V\"").unwrap(), "value");
        assert_eq!(word("\\$V").unwrap(), "$V");
        assert_eq!(word("\"\\$V\\\"\\a\"").unwrap(), "$V\"\\a");
        assert_eq!(word("a\\").unwrap(), "a");
        assert_eq!(word("'a\\'").unwrap(), "a\\");
        let bt = Lexer::new('`');
        assert_eq!(
            bt.expand_word("C:\\dir `$V", &env(&[])).unwrap().value,
            "C:\\dir $V"
        );
    }

    #[test]
    fn word_splitting_after_expansion() {
        assert_eq!(words("x $S y"), ["x", "a", "b", "c", "y"]);
        assert_eq!(words("\"$S\" y"), ["a b  c", "y"]);
        assert_eq!(words("a \"\" b"), ["a", "b"]);
        assert_eq!(words("a\\ b c"), ["a b", "c"]);
        assert_eq!(words("  "), Vec::<String>::new());
    }

    #[test]
    fn used_and_unset_are_reported() {
        let vars = env(&[("A", "1")]);
        let e = Lexer::new('\\')
            .expand_word("$A ${B:-x} $C", &vars)
            .unwrap();
        assert_eq!(e.used.iter().collect::<Vec<_>>(), ["A"]);
        assert_eq!(e.unset.iter().collect::<Vec<_>>(), ["B", "C"]);
    }

    #[test]
    fn raw_modes_used_for_heredoc_detection() {
        let lex = Lexer::new('\\')
            .raw_quotes(true)
            .raw_escapes(true)
            .skip_unset_env(true);
        let w = lex
            .expand_words("cat <<\"EOF\" $X ${Y:-z} a\\ b", &env(&[]))
            .unwrap();
        assert_eq!(w.words, ["cat", "<<\"EOF\"", "$X", "${Y:-z}", "a\\ b"]);
    }

    #[test]
    fn reverse_pattern_keeps_escapes() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("ab"), "ba");
    }
}
