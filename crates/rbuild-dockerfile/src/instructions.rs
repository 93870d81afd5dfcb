//! Typed instructions built from the AST with BuildKit's rules (`instructions/parse.go`):
//! argument counts, flags, exec/shell form, heredoc sources, stages and meta ARGs.

use serde::Serialize;

use crate::command::{Command, command_of};
use crate::error::{Error, ErrorKind, Warning};
use crate::flags::{FlagType, Flags};
use crate::gostr::{go_lower, go_quote};
use crate::healthcheck::{Healthcheck, parse_healthcheck};
use crate::heredoc::{Heredoc, parse_heredoc};
use crate::mount::{Mount, parse_mount};
use crate::node::{Node, NodeArg};

/// Where an instruction sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// First line (1-based).
    pub start_line: usize,
    /// Last line, continuation and heredoc lines included.
    pub end_line: usize,
}

/// One instruction with its location and source text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// What the instruction says.
    #[serde(flatten)]
    pub kind: InstructionKind,
    /// Its lines.
    pub span: Span,
    /// The source line, continuations joined and comments dropped (BuildKit's `Original`).
    pub original: String,
    /// The untyped node it was built from; [`crate::Dockerfile::dump`] prints these.
    #[serde(skip)]
    pub node: Node,
}

/// `FROM [--platform=…] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The base image or stage, not expanded.
    pub image: String,
    /// The stage name, lower-cased.
    pub name: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// What to run.
    pub command: Command,
    /// `--mount` values. One whose value uses a variable is only validated by
    /// [`Instruction::expand`].
    pub mounts: Vec<Mount>,
    /// `--network` (`default`, `none`, `host`).
    pub network: Option<String>,
    /// `--security` (`sandbox`, `insecure`).
    pub security: Option<String>,
    /// Heredoc bodies following the line (`RUN <<EOF`, `RUN cat <<A 3<<B`).
    pub heredocs: Vec<Heredoc>,
}

impl Run {
    /// The text to give the shell for a shell-form RUN with heredocs (BuildKit `dispatchRun`):
    /// a command that is one heredoc word (`RUN <<EOF`) runs the body itself (`<<-` applied);
    /// otherwise the shell gets the command line followed by each body and its terminator, and
    /// does the heredoc redirection itself. `None` without heredocs or in exec form.
    ///
    /// BuildKit writes a single body that starts with `#!` to a file and executes that instead;
    /// that choice is left to the caller.
    pub fn script(&self) -> Option<String> {
        let Command::Shell(cmd) = &self.command else {
            return None;
        };
        let first = self.heredocs.first()?;
        if matches!(parse_heredoc(cmd), Ok(Some(_))) {
            return Some(first.body());
        }
        let mut s = cmd.clone();
        s.push('\n');
        for h in &self.heredocs {
            s.push_str(&h.content);
            s.push_str(&h.name);
            s.push('\n');
        }
        Some(s)
    }
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Source paths (heredoc sources are in `heredocs`).
    pub sources: Vec<String>,
    /// Destination.
    pub dest: String,
    /// `--from`: stage, image or context.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Inline sources: each heredoc becomes a file named after its delimiter.
    pub heredocs: Vec<Heredoc>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    /// Source paths or URLs (heredoc sources are in `heredocs`).
    pub sources: Vec<String>,
    /// Destination.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--checksum` of a remote source.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack`: `None` when not given (archives from the context are unpacked, URLs not).
    pub unpack: Option<bool>,
    /// Inline sources.
    pub heredocs: Vec<Heredoc>,
}

/// A `key=value` of ENV or LABEL, as written (quotes kept until expansion, like BuildKit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One name of ARG, with its default as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// `=default`, if given.
    pub default: Option<String>,
}

/// The instructions of the Dockerfile reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", content = "args", rename_all = "lowercase")]
pub enum InstructionKind {
    /// `FROM`.
    From(From),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `WORKDIR`.
    Workdir(String),
    /// `USER`.
    User(String),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `EXPOSE`.
    Expose(Vec<String>),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `STOPSIGNAL`.
    #[serde(rename = "stopsignal")]
    StopSignal(String),
    /// `SHELL` (always the JSON form).
    Shell(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD`: the trigger, parsed.
    Onbuild(Box<Instruction>),
    /// `MAINTAINER` (deprecated).
    Maintainer(String),
}

impl Instruction {
    /// The upper-case keyword (`RUN`).
    pub fn keyword(&self) -> &'static str {
        match &self.kind {
            InstructionKind::From(_) => "FROM",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::User(_) => "USER",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Maintainer(_) => "MAINTAINER",
        }
    }
}

fn need_one(args: &[String], cmd: &str) -> Result<String, String> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(format!("{cmd} requires exactly one argument")),
    }
}

fn at_least_one(args: &[String], cmd: &str) -> Result<(), String> {
    if args.is_empty() {
        return Err(format!("{cmd} requires at least one argument"));
    }
    Ok(())
}

fn kvps(args: &[String], cmd: &str) -> Result<Vec<KeyValue>, String> {
    at_least_one(args, cmd)?;
    args.chunks(3)
        .map(|c| match c {
            [k, ..] if k.is_empty() => Err(format!("{cmd} names can not be blank")),
            [k, v, ..] => Ok(KeyValue {
                key: k.clone(),
                value: v.clone(),
            }),
            _ => Err(format!("{cmd} requires at least one argument")),
        })
        .collect()
}

/// Splits COPY/ADD arguments into paths and heredoc sources (BuildKit `parseSourcesAndDest`).
fn sources_and_dest(
    node: &Node,
    args: &[String],
    cmd: &str,
) -> Result<(Vec<String>, String, Vec<Heredoc>), String> {
    let (dest, srcs) = args.split_last().ok_or_else(|| no_dest(cmd))?;
    let heredoc_ok = !node.json;
    if heredoc_ok && matches!(parse_heredoc(dest), Ok(Some(_))) {
        return Err(format!("{cmd} cannot accept a heredoc as a destination"));
    }
    let mut paths = Vec::new();
    let mut docs = Vec::new();
    for src in srcs {
        match heredoc_ok
            .then(|| parse_heredoc(src))
            .transpose()
            .map_err(|e| e.to_string())?
            .flatten()
        {
            Some(h) => {
                let mut doc = node
                    .heredocs
                    .iter()
                    .find(|d| d.name == h.name)
                    .cloned()
                    .unwrap_or(h.clone());
                doc.chomp = h.chomp;
                doc.expand = h.expand;
                docs.push(doc);
            }
            None => paths.push(src.clone()),
        }
    }
    Ok((paths, dest.clone(), docs))
}

fn no_dest(cmd: &str) -> String {
    format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
    )
}

fn run_flags() -> &'static [(&'static str, FlagType)] {
    &[
        ("mount", FlagType::Strings),
        ("network", FlagType::String),
        ("security", FlagType::String),
    ]
}

fn parse_run(node: &Node, args: Vec<String>) -> Result<Run, ErrorKind> {
    let flags = Flags::parse(&node.flags, run_flags()).map_err(ErrorKind::Flag)?;
    let network = flags.string("network");
    if let Some(n) = &network {
        if !matches!(n.as_str(), "default" | "none" | "host") {
            return Err(ErrorKind::Flag(format!("unsupported network mode {n:?}")));
        }
    }
    let security = flags.string("security");
    if let Some(s) = &security {
        if !matches!(s.as_str(), "sandbox" | "insecure") {
            return Err(ErrorKind::Flag(format!("unsupported security mode {s:?}")));
        }
    }
    let mut mounts = Vec::new();
    for spec in flags.list("mount") {
        // BuildKit expands mount values at build time; a value with a variable is checked then.
        let literal = parse_mount(&spec, &mut |v| Ok(v.to_string()));
        match literal {
            Ok(m) => {
                if m.from.as_deref().is_some_and(has_variable) {
                    return Err(ErrorKind::Mount(
                        "'from' doesn't support variable expansion, define alias stage instead"
                            .into(),
                    ));
                }
                mounts.push(m);
            }
            Err(_) if has_variable(&spec) => mounts.push(
                parse_mount(&spec, &mut |_| Ok(String::new()))
                    .unwrap_or_else(|_| crate::mount::placeholder(&spec)),
            ),
            Err(e) => return Err(ErrorKind::Mount(e)),
        }
    }
    Ok(Run {
        command: command_of(node, args),
        mounts,
        network,
        security,
        heredocs: node.heredocs.clone(),
    })
}

pub(crate) fn has_variable(s: &str) -> bool {
    // BuildKit's check for `from=`: the regexp `\$.`.
    s.char_indices().any(|(i, c)| c == '$' && i + 1 < s.len())
}

/// Builds the typed instruction for one node.
pub(crate) fn parse_instruction(
    node: Node,
    warnings: &mut Vec<Warning>,
) -> Result<Instruction, Error> {
    let line = node.start_line;
    let kind = parse_kind(&node, warnings).map_err(|k| {
        // An unknown keyword is pointed at; other errors concern the whole instruction.
        let col = matches!(k, ErrorKind::UnknownInstruction(_)).then(|| {
            1 + node
                .original
                .chars()
                .take_while(|c| c.is_whitespace())
                .count()
        });
        let e = Error::new(line, k);
        match col {
            Some(c) => e.with_column(c),
            None => e,
        }
    })?;
    Ok(Instruction {
        kind,
        span: Span {
            start_line: node.start_line,
            end_line: node.end_line,
        },
        original: node.original.clone(),
        node,
    })
}

fn no_flags(node: &Node) -> Result<Flags, ErrorKind> {
    Flags::parse(&node.flags, &[]).map_err(ErrorKind::Flag)
}

fn parse_kind(node: &Node, warnings: &mut Vec<Warning>) -> Result<InstructionKind, ErrorKind> {
    let args = node.arg_strings();
    let syn = ErrorKind::Syntax;
    let legacy = node
        .args
        .get(2)
        .is_some_and(|a| matches!(a, NodeArg::Value(s) if s.is_empty()));
    Ok(match node.value.as_str() {
        "from" => {
            let name = match args.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = go_lower(name);
                    let mut chars = lower.chars();
                    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                        && chars.all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)
                        });
                    if !ok {
                        return Err(syn(format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            go_quote(name)
                        )));
                    }
                    Some(lower)
                }
                _ => return Err(syn("FROM requires either one or three arguments".into())),
            };
            let flags = Flags::parse(&node.flags, &[("platform", FlagType::String)])
                .map_err(ErrorKind::Flag)?;
            InstructionKind::From(From {
                image: args[0].clone(),
                name,
                platform: flags.string("platform"),
            })
        }
        "run" => InstructionKind::Run(parse_run(node, args)?),
        "cmd" => {
            no_flags(node)?;
            InstructionKind::Cmd(command_of(node, args))
        }
        "entrypoint" => {
            no_flags(node)?;
            InstructionKind::Entrypoint(command_of(node, args))
        }
        "copy" => {
            if args.len() < 2 {
                return Err(syn(no_dest("COPY")));
            }
            let f = Flags::parse(
                &node.flags,
                &[
                    ("chown", FlagType::String),
                    ("from", FlagType::String),
                    ("chmod", FlagType::String),
                    ("link", FlagType::Bool),
                    ("parents", FlagType::Bool),
                    ("exclude", FlagType::Strings),
                ],
            )
            .map_err(ErrorKind::Flag)?;
            let (sources, dest, heredocs) = sources_and_dest(node, &args, "COPY").map_err(syn)?;
            InstructionKind::Copy(Copy {
                sources,
                dest,
                from: f.string("from"),
                chown: f.string("chown"),
                chmod: f.string("chmod"),
                link: f.boolean("link").unwrap_or(false),
                parents: f.boolean("parents").unwrap_or(false),
                exclude: f.list("exclude"),
                heredocs,
            })
        }
        "add" => {
            if args.len() < 2 {
                return Err(syn(no_dest("ADD")));
            }
            let f = Flags::parse(
                &node.flags,
                &[
                    ("chown", FlagType::String),
                    ("chmod", FlagType::String),
                    ("link", FlagType::Bool),
                    ("keep-git-dir", FlagType::Bool),
                    ("checksum", FlagType::String),
                    ("unpack", FlagType::Bool),
                    ("exclude", FlagType::Strings),
                ],
            )
            .map_err(ErrorKind::Flag)?;
            let (sources, dest, heredocs) = sources_and_dest(node, &args, "ADD").map_err(syn)?;
            InstructionKind::Add(Add {
                sources,
                dest,
                chown: f.string("chown"),
                chmod: f.string("chmod"),
                link: f.boolean("link").unwrap_or(false),
                exclude: f.list("exclude"),
                checksum: f.string("checksum"),
                keep_git_dir: f.boolean("keep-git-dir").unwrap_or(false),
                unpack: f.boolean("unpack"),
                heredocs,
            })
        }
        "env" | "label" => {
            let up = node.value.to_uppercase();
            no_flags(node)?;
            let kv = kvps(&args, &up).map_err(syn)?;
            if legacy {
                warnings.push(Warning {
                    line: node.start_line,
                    rule: "LegacyKeyValueFormat",
                    message: format!(
                        "\"{up} key=value\" should be used instead of legacy \"{up} key value\" format"
                    ),
                });
            }
            if up == "ENV" {
                InstructionKind::Env(kv)
            } else {
                InstructionKind::Label(kv)
            }
        }
        "arg" => {
            no_flags(node)?;
            at_least_one(&args, "ARG").map_err(syn)?;
            let decls = args
                .iter()
                .map(|a| match a.split_once('=') {
                    Some(("", _)) => Err(syn("ARG names can not be blank".into())),
                    Some((k, v)) => Ok(ArgDecl {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    }),
                    None => Ok(ArgDecl {
                        name: a.clone(),
                        default: None,
                    }),
                })
                .collect::<Result<_, _>>()?;
            InstructionKind::Arg(decls)
        }
        "workdir" => {
            let p = need_one(&args, "WORKDIR").map_err(syn)?;
            no_flags(node)?;
            InstructionKind::Workdir(p)
        }
        "user" => {
            let u = need_one(&args, "USER").map_err(syn)?;
            no_flags(node)?;
            InstructionKind::User(u)
        }
        "stopsignal" => {
            let s = need_one(&args, "STOPSIGNAL").map_err(syn)?;
            no_flags(node)?;
            InstructionKind::StopSignal(s)
        }
        "maintainer" => {
            let m = need_one(&args, "MAINTAINER").map_err(syn)?;
            no_flags(node)?;
            warnings.push(Warning {
                line: node.start_line,
                rule: "MaintainerDeprecated",
                message: "Maintainer instruction is deprecated in favor of using label".into(),
            });
            InstructionKind::Maintainer(m)
        }
        "expose" => {
            at_least_one(&args, "EXPOSE").map_err(syn)?;
            no_flags(node)?;
            InstructionKind::Expose(args)
        }
        "volume" => {
            at_least_one(&args, "VOLUME").map_err(syn)?;
            no_flags(node)?;
            let mut vols = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(syn("VOLUME specified can not be an empty string".into()));
                }
                vols.push(v.to_string());
            }
            InstructionKind::Volume(vols)
        }
        "shell" => {
            no_flags(node)?;
            if args.is_empty() {
                return Err(syn("SHELL requires at least one argument".into()));
            }
            if !node.json {
                return Err(syn("SHELL requires the arguments to be in JSON form".into()));
            }
            InstructionKind::Shell(args)
        }
        "healthcheck" => InstructionKind::Healthcheck(parse_healthcheck(node, &args)?),
        "onbuild" => {
            at_least_one(&args, "ONBUILD").map_err(syn)?;
            no_flags(node)?;
            let Some(NodeArg::Sub(child)) = node.args.first() else {
                return Err(syn("ONBUILD requires at least one argument".into()));
            };
            let trigger = child.value.to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(syn(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(syn(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                _ => {}
            }
            let mut child = (**child).clone();
            child.heredocs = node.heredocs.clone();
            let inner = parse_instruction(child, warnings).map_err(|e| e.kind().clone())?;
            InstructionKind::Onbuild(Box::new(inner))
        }
        other => return Err(ErrorKind::UnknownInstruction(other.to_uppercase())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_script_from_heredocs() {
        let df = crate::parse(
            "FROM x\nRUN <<-EOF\n\techo a\n\tEOF\nRUN cat <<A >/f\nbody\nA\nRUN [\"a\"]\n",
        )
        .unwrap();
        let runs: Vec<&Run> = df.stages[0]
            .instructions
            .iter()
            .filter_map(|i| match &i.kind {
                InstructionKind::Run(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(runs[0].script().as_deref(), Some("echo a\n"));
        assert_eq!(runs[1].script().as_deref(), Some("cat <<A >/f\nbody\nA\n"));
        assert_eq!(runs[2].script(), None);
    }

    #[test]
    fn variable_detection_like_buildkit_regexp() {
        assert!(has_variable("$a"));
        assert!(!has_variable("a$"));
        assert!(!has_variable("stage"));
    }
}
