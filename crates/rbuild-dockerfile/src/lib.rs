//! Dockerfile parser that reads files the way BuildKit's Dockerfile frontend does.
//!
//! Three layers, like BuildKit's `parser` → `instructions` → `dispatch`:
//!
//! 1. the line reader ([`parse_ast`] → [`Ast`] of [`Node`]s): parser directives (`syntax`,
//!    `escape`, `check`), BOM and CRLF, comments, line continuations, heredoc bodies,
//!    per-keyword argument splitting, and [`Ast::dump`], the S-expression BuildKit's
//!    `Node.Dump()` prints. It accepts exactly what BuildKit's parser accepts (no instruction
//!    rules) and its dump is byte-equal to BuildKit's on BuildKit's own parser corpus
//!    (`testdata/buildkit`);
//! 2. typed [`Instruction`]s with BuildKit's flag rules, exec/shell forms, `RUN --mount`,
//!    stages and meta ARGs;
//! 3. variable expansion with BuildKit's shell lexer ([`Lexer`], [`Instruction::expand`]),
//!    reporting the variables used and unset.
//!
//! Plus [`Ignore`], `.dockerignore` patterns with moby's `patternmatcher` semantics.
//! The crate does no IO.
//!
//! ```
//! use rbuild_dockerfile::{parse, Command, InstructionKind, Lexer};
//!
//! let src = r#"# syntax=docker/dockerfile:1
//! ARG GO=1.22
//! FROM golang:${GO} AS build
//! WORKDIR /src
//! RUN --mount=type=cache,target=/root/.cache/go-build \
//!     go build -o /out/app ./cmd/app
//! FROM gcr.io/distroless/static
//! COPY --from=build /out/app /app
//! ENTRYPOINT ["/app"]
//! "#;
//! let df = parse(src).unwrap();
//! assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
//! assert_eq!(df.stages.len(), 2);
//! assert_eq!(df.stages[0].name.as_deref(), Some("build"));
//!
//! // FROM sees the meta ARGs.
//! let meta = |n: &str| (n == "GO").then(|| "1.22".to_string());
//! let (from, _) = df.stages[0].from.expand(&Lexer::new(df.directives.escape), &meta).unwrap();
//! let InstructionKind::From(f) = &from.kind else { unreachable!() };
//! assert_eq!(f.image, "golang:1.22");
//!
//! let InstructionKind::Run(run) = &df.stages[0].instructions[1].kind else { unreachable!() };
//! assert_eq!(run.mounts[0].target.as_deref(), Some("/root/.cache/go-build"));
//! // Flags are taken off the front and the rest is trimmed, as BuildKit does.
//! assert_eq!(run.command, Command::Shell("go build -o /out/app ./cmd/app".into()));
//!
//! print!("{}", df.dump());   // (from "golang:${GO}" "AS" "build") …
//! ```

mod ast;
mod command;
mod error;
mod expand;
mod flags;
mod gojson;
mod gostr;
mod healthcheck;
mod heredoc;
mod ignore;
mod instructions;
mod lex;
mod line_parsers;
mod mount;
mod node;
mod pattern;

use serde::Serialize;

pub use ast::{Ast, Directives, parse_ast};
pub use command::Command;
pub use error::{DirectiveError, Error, ErrorKind, Warning};
pub use expand::ExpandReport;
pub use healthcheck::{HealthTest, Healthcheck};
pub use heredoc::{Heredoc, HeredocError, parse_heredoc};
pub use ignore::{Ignore, IgnoreError, IgnorePattern};
pub use instructions::{
    Add, ArgDecl, Copy, From, Instruction, InstructionKind, KeyValue, Run, Span,
};
pub use lex::{ExpandError, Expansion, Lexer, Words};
pub use mount::{Mount, MountType, Sharing};
pub use node::{Node, NodeArg};

/// Convenience alias for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A build stage: its FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// The FROM instruction ([`InstructionKind::From`]).
    pub from: Instruction,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The instructions of the stage, FROM excluded.
    pub instructions: Vec<Instruction>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// Parser directives.
    pub directives: Directives,
    /// ARG instructions before the first FROM (the only variables FROM can use).
    pub meta_args: Vec<Instruction>,
    /// The stages in file order.
    pub stages: Vec<Stage>,
    /// Parser warnings (empty continuation lines, deprecated MAINTAINER, legacy `ENV k v`).
    pub warnings: Vec<Warning>,
}

/// Parses a Dockerfile.
///
/// # Errors
///
/// The first problem BuildKit would report: a repeated or invalid directive, an unterminated
/// heredoc, a JSON array of non-strings, an unknown instruction or flag, a wrong argument count,
/// an instruction before the first FROM, an empty file or one without FROM.
pub fn parse(source: &str) -> Result<Dockerfile> {
    let ast = ast::parse_ast(source)?;
    let mut warnings = ast.warnings;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in ast.nodes {
        let line = node.start_line;
        let inst = instructions::parse_instruction(node, &mut warnings)?;
        match &inst.kind {
            InstructionKind::From(f) => stages.push(Stage {
                name: f.name.clone(),
                from: inst,
                instructions: Vec::new(),
            }),
            InstructionKind::Arg(_) if stages.is_empty() => meta_args.push(inst),
            _ => match stages.last_mut() {
                Some(s) => s.instructions.push(inst),
                None => {
                    return Err(Error::msg(line, "no build stage in current context"));
                }
            },
        }
    }
    if stages.is_empty() {
        // BuildKit's dockerfile2llb refuses a file of meta ARGs only.
        let line = meta_args
            .last()
            .map_or(1, |a: &Instruction| a.span.start_line);
        return Err(Error::msg(line, "dockerfile contains no stages to build"));
    }
    warnings.sort_by_key(|w| w.line);
    Ok(Dockerfile {
        directives: ast.directives,
        meta_args,
        stages,
        warnings,
    })
}

/// Parses bytes, replacing invalid UTF-8 with U+FFFD.
///
/// # Errors
///
/// As [`parse`].
pub fn parse_bytes(source: &[u8]) -> Result<Dockerfile> {
    parse(&String::from_utf8_lossy(source))
}

impl Dockerfile {
    /// Every instruction in file order: meta ARGs, then each stage's FROM and instructions.
    pub fn instructions(&self) -> impl Iterator<Item = &Instruction> {
        self.meta_args.iter().chain(
            self.stages
                .iter()
                .flat_map(|s| std::iter::once(&s.from).chain(s.instructions.iter())),
        )
    }

    /// BuildKit's AST dump: one `(keyword ["--flags"] "arg" …)` line per instruction, the
    /// format of BuildKit's `parser/testfiles/*/result`; the same as [`Ast::dump`] of the file.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for i in self.instructions() {
            out.push('(');
            out.push_str(&i.node.dump());
            out.push_str(")\n");
        }
        out
    }

    /// Writes the file back as Dockerfile source: directives, one line per instruction
    /// (continuations joined, comments dropped) and the heredoc bodies. Parsing the result gives
    /// the same [`Dockerfile::dump`] and heredocs.
    pub fn to_source(&self) -> String {
        let mut out = String::new();
        let d = &self.directives;
        if let Some(s) = &d.syntax {
            out.push_str(&format!("# syntax={s}\n"));
        }
        if d.escape != '\\' {
            out.push_str(&format!("# escape={}\n", d.escape));
        }
        if let Some(c) = &d.check {
            out.push_str(&format!("# check={c}\n"));
        }
        for i in self.instructions() {
            out.push_str(&i.original);
            out.push('\n');
            for h in &i.node.heredocs {
                out.push_str(&h.content);
                if !h.content.is_empty() && !h.content.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&h.name);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_before_from_is_an_error() {
        let e = parse("ARG A\nRUN x\nFROM y").unwrap_err();
        assert_eq!(e.to_string(), "line 2: no build stage in current context");
    }

    #[test]
    fn meta_args_and_stages() {
        let df = parse("ARG A=1\nARG B\nFROM x AS One\nRUN a\nFROM one\n").unwrap();
        assert_eq!(df.meta_args.len(), 2);
        assert_eq!(df.stages[0].name.as_deref(), Some("one"));
        assert_eq!(df.stages[1].instructions.len(), 0);
        assert_eq!(df.stages[0].instructions[0].keyword(), "RUN");
    }

    #[test]
    fn to_source_round_trips() {
        let src = "# escape=`\nFROM x\nRUN a `\n  b\nCOPY <<-EOF /x\n\tbody\n\tEOF\n";
        let df = parse(src).unwrap();
        let again = parse(&df.to_source()).unwrap();
        assert_eq!(df.dump(), again.dump());
        assert_eq!(
            df.stages[0].instructions[1].node.heredocs,
            again.stages[0].instructions[1].node.heredocs
        );
    }

    #[test]
    fn json_serialisation_is_tagged() {
        let df = parse("FROM x\nCMD [\"a\"]\n").unwrap();
        let v = serde_json::to_value(&df).unwrap();
        assert_eq!(v["stages"][0]["instructions"][0]["instruction"], "cmd");
        assert_eq!(v["stages"][0]["instructions"][0]["args"]["exec"][0], "a");
    }
}
