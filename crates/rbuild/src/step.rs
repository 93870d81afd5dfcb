//! Planning a stage: every instruction expanded, its effect on the image config applied, its
//! cache key computed — all before anything runs (docs/ARCHITECTURE.md, "cache keys").

use std::collections::BTreeMap;

use rbuild_dockerfile::{Command, Instruction, InstructionKind, Lexer};
use serde_json::json;

use crate::config::RuntimeConfig;
use crate::copy::CopyPlan;

/// What executing a step means.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Only the config changes.
    ConfigOnly,
    /// Run a process on top of the image so far.
    Run {
        /// argv.
        args: Vec<String>,
        /// Environment of the process (`KEY=value`).
        env: Vec<String>,
        /// Working directory.
        cwd: String,
        /// USER, if set.
        user: Option<String>,
        /// `--mount`s.
        mounts: Vec<rbuild_dockerfile::Mount>,
        /// `--network=none`.
        network_none: bool,
        /// `--security=insecure` (allowed by the build's options).
        insecure: bool,
        /// A heredoc script to run as a file (`/dev/pipes/NAME`): (name, content).
        heredoc_file: Option<(String, String)>,
    },
    /// Copy files from the context into a new layer.
    Copy(CopyPlan),
    /// Create a directory (WORKDIR), owned by `user`, if it does not exist yet.
    Mkdir {
        /// Absolute path.
        path: String,
        /// USER in force, if any.
        user: Option<String>,
    },
}

/// A planned step.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// 1-based number within the stage (`FROM` is 1).
    pub index: usize,
    /// Dockerfile line of the instruction.
    pub line: usize,
    /// Text for progress lines.
    pub display: String,
    /// History `created_by`.
    pub created_by: String,
    /// Cache key (hex sha256).
    pub key: String,
    /// What to do.
    pub action: Action,
    /// The runtime config after this step.
    pub config_after: RuntimeConfig,
    /// The inputs of the cache key, for `--explain`.
    pub inputs: crate::explain::StepInputs,
}

/// The state a stage's planning carries from one instruction to the next.
#[derive(Debug, Clone)]
pub(crate) struct PlanState {
    /// Runtime config so far.
    pub config: RuntimeConfig,
    /// Build args declared in this stage, with their values.
    pub args: BTreeMap<String, Option<String>>,
    /// SHELL in force.
    pub shell: Vec<String>,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD otherwise).
    pub cmd_set: bool,
    /// Key of the previous step.
    pub key: String,
}

impl PlanState {
    /// Looks a variable up as BuildKit does for expansion: ENV first, then ARG.
    pub(crate) fn lookup(&self, name: &str) -> Option<String> {
        if let Some(v) = self.config.env_get(name) {
            return Some(v.to_owned());
        }
        self.args.get(name).cloned().flatten()
    }

    /// Build args visible to a RUN step that are not overridden by ENV, `KEY=value` sorted.
    pub(crate) fn visible_args(&self) -> Vec<String> {
        self.args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .filter(|(k, _)| self.config.env_get(k).is_none())
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// Shell form → argv through SHELL; exec form as is.
pub(crate) fn argv(command: &Command, shell: &[String]) -> Vec<String> {
    match command {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

/// docker's rendering of a command in history: JSON for exec form.
pub(crate) fn render_command(args: &[String]) -> String {
    serde_json::to_string(args).unwrap_or_default()
}

/// The `ExposedPorts` keys of one EXPOSE argument: `80`, `80/udp`, and ranges such as
/// `9000-9001/tcp`, which docker and BuildKit expand into one key per port.
///
/// # Errors
///
/// A message for a port that is not a number or a range that runs backwards.
pub(crate) fn expose_keys(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    let bad =
        || format!("EXPOSE {spec}: invalid port (expected PORT, PORT/PROTO or START-END/PROTO)");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Cleans an absolute path lexically (`/a/./b/../c` → `/a/c`).
pub(crate) fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Plans one config-only or RUN/WORKDIR instruction (COPY/ADD are planned by the builder, which
/// owns the context). Returns the action, display text and created_by, and applies the effect.
///
/// # Errors
///
/// A message for instructions that cannot be carried out (e.g. ONBUILD ONBUILD).
pub(crate) fn plan_simple(
    st: &mut PlanState,
    inst: &Instruction,
) -> Result<(Action, String), String> {
    let c = &mut st.config;
    let action_and_text = match &inst.kind {
        InstructionKind::Env(kvs) => {
            let mut text = String::from("ENV");
            for kv in kvs {
                c.env_set(&kv.key, &kv.value);
                text.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            (Action::ConfigOnly, text)
        }
        InstructionKind::Label(kvs) => {
            let mut text = String::from("LABEL");
            let labels = c.labels.get_or_insert_with(BTreeMap::new);
            for kv in kvs {
                labels.insert(kv.key.clone(), kv.value.clone());
                text.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            (Action::ConfigOnly, text)
        }
        InstructionKind::Workdir(dir) => {
            let base = c.working_dir.clone().unwrap_or_else(|| "/".to_owned());
            let path = if dir.starts_with('/') {
                clean_abs(dir)
            } else {
                clean_abs(&format!("{base}/{dir}"))
            };
            c.working_dir = Some(path.clone());
            (
                Action::Mkdir {
                    path: path.clone(),
                    user: c.user.clone(),
                },
                format!("WORKDIR {path}"),
            )
        }
        InstructionKind::User(u) => {
            c.user = Some(u.clone());
            (Action::ConfigOnly, format!("USER {u}"))
        }
        InstructionKind::Expose(ports) => {
            let map = c.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in ports {
                for key in expose_keys(p)? {
                    map.insert(key, json!({}));
                }
            }
            (
                Action::ConfigOnly,
                format!("EXPOSE map[{}]", ports.join(" ")),
            )
        }
        InstructionKind::Volume(vols) => {
            let map = c.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                map.insert(v.clone(), json!({}));
            }
            (
                Action::ConfigOnly,
                format!("VOLUME {}", render_command(vols)),
            )
        }
        InstructionKind::StopSignal(s) => {
            c.stop_signal = Some(s.clone());
            (Action::ConfigOnly, format!("STOPSIGNAL {s}"))
        }
        InstructionKind::Cmd(cmd) => {
            let args = argv(cmd, &st.shell);
            c.cmd = Some(args.clone());
            st.cmd_set = true;
            (Action::ConfigOnly, format!("CMD {}", render_command(&args)))
        }
        InstructionKind::Entrypoint(cmd) => {
            let args = argv(cmd, &st.shell);
            c.entrypoint = Some(args.clone());
            if !st.cmd_set {
                // docker: an ENTRYPOINT resets a CMD inherited from the base image.
                c.cmd = None;
            }
            (
                Action::ConfigOnly,
                format!("ENTRYPOINT {}", render_command(&args)),
            )
        }
        InstructionKind::Shell(sh) => {
            st.shell = sh.clone();
            c.extra.insert("Shell".to_owned(), json!(sh));
            (Action::ConfigOnly, format!("SHELL {}", render_command(sh)))
        }
        InstructionKind::Maintainer(m) => (Action::ConfigOnly, format!("MAINTAINER {m}")),
        InstructionKind::Onbuild(inner) => {
            let text = inner.original.trim().to_owned();
            let list = c
                .extra
                .entry("OnBuild".to_owned())
                .or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(json!(text));
            }
            (Action::ConfigOnly, format!("ONBUILD {text}"))
        }
        InstructionKind::Healthcheck(_) => (Action::ConfigOnly, inst.original.trim().to_owned()),
        InstructionKind::Run(run) => {
            let visible = st.visible_args();
            let c = &st.config;
            let args = argv(&run.command, &st.shell);
            let mut env: Vec<String> = c.env.clone().unwrap_or_default();
            env.extend(visible.iter().cloned());
            let shown = match &run.command {
                Command::Exec(v) => render_command(v),
                Command::Shell(_) => args.join(" "),
            };
            let prefix = if visible.is_empty() {
                String::new()
            } else {
                format!("|{} {} ", visible.len(), visible.join(" "))
            };
            (
                Action::Run {
                    args,
                    env,
                    cwd: c.working_dir.clone().unwrap_or_else(|| "/".to_owned()),
                    user: c.user.clone(),
                    mounts: Vec::new(),
                    network_none: false,
                    insecure: false,
                    heredoc_file: None,
                },
                format!("RUN {prefix}{shown} # buildkit"),
            )
        }
        _ => return Err(format!("{} is not supported here", inst.keyword())),
    };
    Ok(action_and_text)
}

/// The config's `Healthcheck` object as docker writes it (durations in nanoseconds).
pub(crate) fn healthcheck_json(
    h: &rbuild_dockerfile::Healthcheck,
    shell: &[String],
) -> serde_json::Value {
    let test = match &h.test {
        rbuild_dockerfile::HealthTest::None => vec!["NONE".to_owned()],
        rbuild_dockerfile::HealthTest::Cmd(Command::Exec(v)) => {
            let mut t = vec!["CMD".to_owned()];
            t.extend(v.iter().cloned());
            t
        }
        rbuild_dockerfile::HealthTest::Cmd(Command::Shell(s)) => {
            let _ = shell; // docker records CMD-SHELL and lets the runtime pick the shell
            vec!["CMD-SHELL".to_owned(), s.clone()]
        }
    };
    let mut v = json!({ "Test": test });
    let ns = |d: &Option<std::time::Duration>| {
        d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    };
    if let Some(x) = ns(&h.interval) {
        v["Interval"] = json!(x);
    }
    if let Some(x) = ns(&h.timeout) {
        v["Timeout"] = json!(x);
    }
    if let Some(x) = ns(&h.start_period) {
        v["StartPeriod"] = json!(x);
    }
    if let Some(x) = ns(&h.start_interval) {
        v["StartInterval"] = json!(x);
    }
    if let Some(r) = h.retries {
        v["Retries"] = json!(r);
    }
    v
}

/// The lexer for a Dockerfile's escape character.
pub(crate) fn lexer(escape: char) -> Lexer {
    Lexer::new(escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_abs("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_abs("/../x"), "/x");
        assert_eq!(clean_abs("/"), "/");
    }
}
