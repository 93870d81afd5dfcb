//! Variable expansion of typed instructions, in exactly the arguments BuildKit's dispatcher
//! expands (`dispatch.go`: ENV, ARG, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, COPY/ADD
//! paths and flags, FROM with the meta ARGs, RUN --mount values). RUN, CMD, ENTRYPOINT, SHELL,
//! HEALTHCHECK and ONBUILD are left to the shell or to the child build.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::instructions::{Instruction, InstructionKind};
use crate::lex::Lexer;
use crate::mount::parse_mount;

/// Variables an expansion looked at: the cache key needs `used`, the undefined-variable warning
/// `unset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpandReport {
    /// Variables that were referenced and set.
    pub used: BTreeSet<String>,
    /// Variables that were referenced and not set.
    pub unset: BTreeSet<String>,
}

struct Expander<'a> {
    lexer: &'a Lexer,
    vars: &'a dyn Fn(&str) -> Option<String>,
    line: usize,
    report: ExpandReport,
}

impl Expander<'_> {
    fn word(&mut self, w: &str) -> Result<String, Error> {
        self.word_with(*self.lexer, w)
    }

    fn word_with(&mut self, lexer: Lexer, w: &str) -> Result<String, Error> {
        let e = lexer.expand_word(w, self.vars).map_err(|source| {
            Error::new(
                self.line,
                ErrorKind::Expand {
                    word: w.to_string(),
                    source,
                },
            )
        })?;
        self.report.used.extend(e.used);
        self.report.unset.extend(e.unset);
        Ok(e.value)
    }

    fn words(&mut self, w: &str) -> Result<Vec<String>, Error> {
        let e = self.lexer.expand_words(w, self.vars).map_err(|source| {
            Error::new(
                self.line,
                ErrorKind::Expand {
                    word: w.to_string(),
                    source,
                },
            )
        })?;
        self.report.used.extend(e.used);
        self.report.unset.extend(e.unset);
        Ok(e.words)
    }

    fn opt(&mut self, w: &mut Option<String>) -> Result<(), Error> {
        if let Some(v) = w {
            *v = self.word(v)?;
        }
        Ok(())
    }

    fn all(&mut self, ws: &mut [String]) -> Result<(), Error> {
        for w in ws {
            *w = self.word(w)?;
        }
        Ok(())
    }
}

impl Instruction {
    /// Expands variables in the arguments BuildKit expands for this instruction, with `vars`
    /// giving the value of each name in scope (for FROM: the meta ARGs only). The node and
    /// `original` are kept as written.
    ///
    /// ```
    /// use rbuild_dockerfile::{parse, InstructionKind, Lexer};
    ///
    /// let df = parse("FROM alpine\nCOPY --chown=${U:-app} src/ /srv/$APP/\n").unwrap();
    /// let copy = &df.stages[0].instructions[0];
    /// let vars = |n: &str| (n == "APP").then(|| "web".to_string());
    /// let (expanded, report) = copy.expand(&Lexer::new('\\'), &vars).unwrap();
    /// let InstructionKind::Copy(c) = &expanded.kind else { unreachable!() };
    /// assert_eq!((c.dest.as_str(), c.chown.as_deref()), ("/srv/web/", Some("app")));
    /// assert!(report.unset.contains("U"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Expand`] when a word cannot be expanded (`${V:?}` on an unset variable,
    /// unterminated quote), [`ErrorKind::Mount`] when an expanded `--mount` is invalid.
    pub fn expand(
        &self,
        lexer: &Lexer,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Instruction, ExpandReport), Error> {
        let mut x = Expander {
            lexer,
            vars,
            line: self.span.start_line,
            report: ExpandReport::default(),
        };
        let mut out = self.clone();
        match &mut out.kind {
            InstructionKind::From(f) => {
                f.image = x.word(&f.image)?;
                x.opt(&mut f.platform)?;
            }
            InstructionKind::Env(kvs) | InstructionKind::Label(kvs) => {
                for kv in kvs {
                    kv.key = x.word(&kv.key)?;
                    kv.value = x.word(&kv.value)?;
                }
            }
            InstructionKind::Arg(decls) => {
                for d in decls {
                    d.name = x.word(&d.name)?;
                    x.opt(&mut d.default)?;
                }
            }
            InstructionKind::Workdir(s)
            | InstructionKind::User(s)
            | InstructionKind::StopSignal(s) => {
                *s = x.word(s)?;
            }
            InstructionKind::Volume(v) => x.all(v)?,
            InstructionKind::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports.iter() {
                    out.extend(x.words(p)?);
                }
                *ports = out;
            }
            InstructionKind::Copy(c) => {
                x.all(&mut c.sources)?;
                c.dest = x.word(&c.dest)?;
                x.opt(&mut c.from)?;
                x.opt(&mut c.chown)?;
                x.opt(&mut c.chmod)?;
                x.all(&mut c.exclude)?;
                expand_heredocs(&mut x, &mut c.heredocs)?;
            }
            InstructionKind::Add(a) => {
                x.all(&mut a.sources)?;
                a.dest = x.word(&a.dest)?;
                x.opt(&mut a.chown)?;
                x.opt(&mut a.chmod)?;
                x.opt(&mut a.checksum)?;
                x.all(&mut a.exclude)?;
                expand_heredocs(&mut x, &mut a.heredocs)?;
            }
            InstructionKind::Run(r) => {
                let line = x.line;
                for m in &mut r.mounts {
                    let mut err = None;
                    let parsed = parse_mount(&m.raw, &mut |v| {
                        x.word(v).map_err(|e| {
                            let msg = e.to_string();
                            err = Some(e);
                            msg
                        })
                    });
                    *m = match (parsed, err) {
                        (Ok(m), _) => m,
                        (Err(_), Some(e)) => return Err(e),
                        (Err(msg), None) => return Err(Error::new(line, ErrorKind::Mount(msg))),
                    };
                }
            }
            InstructionKind::Cmd(_)
            | InstructionKind::Entrypoint(_)
            | InstructionKind::Shell(_)
            | InstructionKind::Healthcheck(_)
            | InstructionKind::Onbuild(_)
            | InstructionKind::Maintainer(_) => {}
        }
        Ok((out, x.report))
    }
}

fn expand_heredocs(
    x: &mut Expander<'_>,
    docs: &mut [crate::heredoc::Heredoc],
) -> Result<(), Error> {
    // Heredoc bodies of COPY/ADD are expanded like a shell heredoc: variables yes, quotes are
    // plain characters (BuildKit uses a lexer with SkipProcessQuotes); quoted delimiters opt out.
    let lexer = x.lexer.skip_process_quotes(true);
    for d in docs.iter_mut().filter(|d| d.expand) {
        d.content = x.word_with(lexer, &d.content)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{InstructionKind, Lexer, parse};

    fn vars(n: &str) -> Option<String> {
        match n {
            "A" => Some("1".into()),
            "DIR" => Some("/app".into()),
            "T" => Some("cache".into()),
            _ => None,
        }
    }

    #[test]
    fn env_value_quotes_removed_on_expansion() {
        let df = parse("FROM x\nENV K=\"$A and ${B:-b}\" L='$A'\n").unwrap();
        let (i, r) = df.stages[0].instructions[0]
            .expand(&Lexer::new('\\'), &vars)
            .unwrap();
        let InstructionKind::Env(kv) = i.kind else {
            panic!()
        };
        assert_eq!(kv[0].value, "1 and b");
        assert_eq!(kv[1].value, "$A");
        assert!(r.used.contains("A") && r.unset.contains("B"));
    }

    #[test]
    fn run_is_not_expanded_but_mounts_are() {
        let df = parse("FROM x\nRUN --mount=type=$T,target=$DIR/c echo $A\n").unwrap();
        let (i, _) = df.stages[0].instructions[0]
            .expand(&Lexer::new('\\'), &vars)
            .unwrap();
        let InstructionKind::Run(r) = i.kind else {
            panic!()
        };
        assert_eq!(r.command, crate::Command::Shell("echo $A".into()));
        assert_eq!(r.mounts[0].target.as_deref(), Some("/app/c"));
        assert_eq!(r.mounts[0].kind, crate::MountType::Cache);
    }

    #[test]
    fn copy_heredoc_body_expanded_unless_quoted() {
        let src = "FROM x\nCOPY <<A <<'B' /d/\n$A \"q\"\nA\n$A\nB\n";
        let df = parse(src).unwrap();
        let (i, _) = df.stages[0].instructions[0]
            .expand(&Lexer::new('\\'), &vars)
            .unwrap();
        let InstructionKind::Copy(c) = i.kind else {
            panic!()
        };
        assert_eq!(c.heredocs[0].content, "1 \"q\"\n");
        assert_eq!(c.heredocs[1].content, "$A\n");
    }

    #[test]
    fn expansion_error_names_word_and_line() {
        let df = parse("FROM x\n\nWORKDIR ${NOPE:?must be set}\n").unwrap();
        let e = df.stages[0].instructions[0]
            .expand(&Lexer::new('\\'), &vars)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: failed to process \"${NOPE:?must be set}\""
        );
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "NOPE: must be set"
        );
    }
}
