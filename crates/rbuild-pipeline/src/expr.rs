//! `rules:if` / `only:variables` expressions (GitLab's CI/CD variable expressions).
//!
//! Grammar (<https://docs.gitlab.com/ee/ci/jobs/job_control.html#cicd-variable-expressions>),
//! `&&` binding tighter than `||` as upstream's `Gitlab::Ci::Pipeline::Expression::Lexer`:
//!
//! ```text
//! or      = and { "||" and }
//! and     = compare { "&&" compare }
//! compare = "(" or ")" | operand [ ("==" | "!=" | "=~" | "!~") operand ]
//! operand = "$" NAME | '"' text '"' | "'" text "'" | "/" regex "/" [flags] | "null"
//! ```

use regex::Regex;

use crate::error::{Error, PatternError, Result};

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a OP b`.
    Compare(Operand, CompareOp, Operand),
    /// A lone operand: true when it is a defined, non-empty value.
    Present(Operand),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `=~`.
    Match,
    /// `!~`.
    NotMatch,
}

/// A value in an expression.
#[derive(Debug, Clone)]
pub enum Operand {
    /// `$NAME`: the variable's value, or null when undefined.
    Var(String),
    /// A quoted string.
    Str(String),
    /// `/pattern/flags`.
    Pattern(Regex),
    /// `null`.
    Null,
}

impl Expr {
    /// Parses an expression.
    ///
    /// # Errors
    ///
    /// [`Error::Expression`] with the offset of the first token that does not fit the grammar.
    pub fn parse(text: &str) -> Result<Expr> {
        let mut p = Parser { text, pos: 0 };
        let e = p.or()?;
        p.skip_ws();
        if p.pos < text.len() {
            return Err(p.err("unexpected text after the expression"));
        }
        Ok(e)
    }

    /// Evaluates against variables (`lookup` gives expanded values; `None` = undefined).
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(lookup) || b.eval(lookup),
            Expr::And(a, b) => a.eval(lookup) && b.eval(lookup),
            Expr::Present(o) => match value(o, lookup) {
                Value::Str(s) => !s.is_empty(),
                Value::Null => false,
                Value::Pattern(_) => true,
            },
            Expr::Compare(l, op, r) => {
                let (l, r) = (value(l, lookup), value(r, lookup));
                match op {
                    CompareOp::Eq => l == r,
                    CompareOp::Ne => l != r,
                    CompareOp::Match => matches(&l, &r),
                    CompareOp::NotMatch => !matches(&l, &r),
                }
            }
        }
    }
}

#[derive(Debug)]
enum Value {
    Str(String),
    Null,
    Pattern(Regex),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Null, Value::Null) => true,
            (Value::Pattern(a), Value::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

fn value(o: &Operand, lookup: &dyn Fn(&str) -> Option<String>) -> Value {
    match o {
        Operand::Var(n) => lookup(n).map_or(Value::Null, Value::Str),
        Operand::Str(s) => Value::Str(s.clone()),
        Operand::Pattern(r) => Value::Pattern(r.clone()),
        Operand::Null => Value::Null,
    }
}

fn matches(l: &Value, r: &Value) -> bool {
    // The right side may be a variable holding "/pattern/" (GitLab 15.0+ reads it as a regex).
    let re = match r {
        Value::Pattern(re) => Some(re.clone()),
        Value::Str(s) => parse_pattern(s).ok(),
        Value::Null => None,
    };
    match (l, re) {
        (Value::Str(s), Some(re)) => re.is_match(s),
        _ => false,
    }
}

/// Parses GitLab's `/pattern/flags` form (flags `i`, `m`, `s`) into a regex.
///
/// # Errors
///
/// [`Error::Pattern`] when `text` is not in slashes, has an unknown flag or does not compile.
pub fn parse_pattern(text: &str) -> Result<Regex> {
    pattern(text).map_err(|source| Error::Pattern {
        pattern: text.to_owned(),
        source,
    })
}

fn pattern(text: &str) -> std::result::Result<Regex, PatternError> {
    let body = text
        .strip_prefix('/')
        .ok_or(PatternError::MissingOpeningSlash)?;
    let end = body.rfind('/').ok_or(PatternError::MissingClosingSlash)?;
    let (pat, flags) = (&body[..end], &body[end + 1..]);
    if let Some(bad) = flags.chars().find(|c| !"ims".contains(*c)) {
        return Err(PatternError::UnknownFlag(bad));
    }
    let prefix = if flags.is_empty() {
        String::new()
    } else {
        format!("(?{flags})")
    };
    Regex::new(&format!("{prefix}{pat}")).map_err(PatternError::Compile)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> Error {
        Error::Expression {
            expression: self.text.to_owned(),
            offset: self.pos,
            message: message.to_owned(),
        }
    }

    fn skip_ws(&mut self) {
        while self.rest().starts_with(char::is_whitespace) {
            self.pos += self.rest().chars().next().map_or(1, char::len_utf8);
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.compare()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.compare()?));
        }
        Ok(left)
    }

    fn compare(&mut self) -> Result<Expr> {
        if self.eat("(") {
            let e = self.or()?;
            if !self.eat(")") {
                return Err(self.err("expected `)`"));
            }
            return Ok(e);
        }
        let left = self.operand()?;
        let op = if self.eat("==") {
            CompareOp::Eq
        } else if self.eat("!=") {
            CompareOp::Ne
        } else if self.eat("=~") {
            CompareOp::Match
        } else if self.eat("!~") {
            CompareOp::NotMatch
        } else {
            return Ok(Expr::Present(left));
        };
        let right = self.operand()?;
        Ok(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand> {
        self.skip_ws();
        let rest = self.rest();
        if let Some(after) = rest.strip_prefix('$') {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len == 0 {
                return Err(self.err("expected a variable name after `$`"));
            }
            let name = after[..len].to_owned();
            self.pos += 1 + len;
            return Ok(Operand::Var(name));
        }
        if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let Some(end) = rest[1..].find(q) else {
                return Err(self.err("unterminated string"));
            };
            let s = rest[1..1 + end].to_owned();
            self.pos += end + 2;
            return Ok(Operand::Str(s));
        }
        if rest.starts_with('/') {
            // The pattern ends at the first unescaped `/`; flags follow.
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'/' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            if i >= bytes.len() {
                return Err(self.err("unterminated regular expression"));
            }
            let flags = rest[i + 1..]
                .bytes()
                .take_while(u8::is_ascii_alphabetic)
                .count();
            let lit = &rest[..i + 1 + flags];
            let re = pattern(lit).map_err(|e| self.err(&e.to_string()))?;
            self.pos += lit.len();
            return Ok(Operand::Pattern(re));
        }
        if rest.starts_with("null") {
            self.pos += 4;
            return Ok(Operand::Null);
        }
        Err(self.err("expected `$VARIABLE`, a quoted string, `/regex/` or `null`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str, vars: &[(&str, &str)]) -> bool {
        let e = Expr::parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
        let owned: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        e.eval(&|n| owned.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
    }

    #[test]
    fn operators_golden() {
        let v = [("BRANCH", "master"), ("EMPTY", ""), ("TAG", "v1.2.0")];
        let cases: &[(&str, bool)] = &[
            ("$BRANCH == \"master\"", true),
            ("$BRANCH == 'main'", false),
            ("$BRANCH != \"main\"", true),
            ("\"master\" == $BRANCH", true),
            ("$BRANCH =~ /^mas/", true),
            ("$BRANCH =~ /^MAS/", false),
            ("$BRANCH =~ /^MAS/i", true),
            ("$BRANCH !~ /^feat/", true),
            ("$MISSING =~ /.*/", false),
            ("$MISSING !~ /.*/", true),
            ("$MISSING == null", true),
            ("$EMPTY == null", false),
            ("$EMPTY == \"\"", true),
            ("$EMPTY", false),
            ("$BRANCH", true),
            ("$MISSING", false),
            ("$TAG =~ /^v\\d+\\.\\d+/", true),
            // && binds tighter than ||.
            ("$MISSING || $BRANCH == \"master\" && $TAG", true),
            ("($MISSING || $BRANCH == \"master\") && $EMPTY", false),
            ("$BRANCH == \"x\" || $BRANCH == \"y\" || $TAG", true),
            ("  ( ( $BRANCH ) )  ", true),
        ];
        for (expr, want) in cases {
            assert_eq!(eval(expr, &v), *want, "{expr}");
        }
    }

    #[test]
    fn regex_held_in_a_variable() {
        assert!(eval(
            "$BRANCH =~ $PAT",
            &[("BRANCH", "release-1"), ("PAT", "/^release-/")]
        ));
    }

    #[test]
    fn parse_errors_point_at_the_problem() {
        let err = Expr::parse("$A == ").unwrap_err();
        assert!(
            matches!(err, Error::Expression { offset: 6, .. }),
            "{err:?}"
        );
        assert!(Expr::parse("($A").is_err());
        assert!(Expr::parse("$A == \"x").is_err());
        assert!(Expr::parse("$A =~ /x/q").is_err());
        assert!(Expr::parse("$A $B").is_err());
    }

    #[test]
    fn pattern_errors_say_why() {
        let why = |text: &str| match parse_pattern(text).unwrap_err() {
            Error::Pattern { pattern, source } => {
                assert_eq!(pattern, text);
                source.to_string()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(why("abc/"), "a pattern starts with `/`");
        assert_eq!(why("/abc"), "a pattern ends with `/`");
        assert_eq!(why("/abc/x"), "unknown regex flag `x`");
        assert!(why("/a(/").contains("unclosed group"), "{}", why("/a(/"));
        assert!(parse_pattern("/^RE/i").unwrap().is_match("release"));
        assert_eq!(
            Expr::parse("$A =~ /x/q").unwrap_err().to_string(),
            "invalid expression \"$A =~ /x/q\" at offset 6: unknown regex flag `q`"
        );
    }
}
