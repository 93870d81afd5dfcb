//! The typed pipeline: stages, jobs and the keywords we support.
//!
//! Plain data and queries on it; reading a file into a [`Pipeline`] lives in `load`, which
//! depends on this module and never the other way round.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use crate::expr::Expr;
use crate::variables::{Variable, Variables, expand_with};

/// GitLab's default stages when the file has no `stages:` (`.pre` and `.post` always exist).
pub const DEFAULT_STAGES: [&str; 3] = ["build", "test", "deploy"];

/// A loaded, validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The main file.
    pub path: PathBuf,
    /// Stage order, `.pre` first and `.post` last.
    pub stages: Vec<String>,
    /// Global `variables:`.
    pub variables: Variables,
    /// `workflow:rules`, if any: no matching rule (or `when: never`) means no pipeline.
    pub workflow_rules: Option<Vec<Rule>>,
    /// Visible jobs (hidden `.name` templates excluded), in file order.
    pub jobs: Vec<Job>,
    /// Keywords we ignore and similar, for the CLI to print once.
    pub warnings: Vec<Warning>,
}

/// A warning produced while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// Keywords we do not support, each with where it appears (`(global)` or job names).
    UnsupportedKeywords(BTreeMap<String, Vec<String>>),
    /// Anything else (an ignored `include:` kind, an assumption made).
    Other(String),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnsupportedKeywords(map) => {
                let list: Vec<String> = map
                    .iter()
                    .map(|(k, w)| format!("`{k}` ({})", w.join(", ")))
                    .collect();
                write!(f, "unsupported keywords are ignored: {}", list.join(", "))
            }
            Warning::Other(m) => f.write_str(m),
        }
    }
}

/// A job's `image:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The reference as written (variables not yet expanded).
    pub name: String,
    /// `image:entrypoint`, overriding the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
}

/// One job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job name (the YAML key).
    pub name: String,
    /// Its stage (default `test`).
    pub stage: String,
    /// Its image (job value, else `default:image`, else the global `image:`).
    pub image: Option<Image>,
    /// `before_script` (job value replaces the default one).
    pub before_script: Vec<String>,
    /// `script`.
    pub script: Vec<String>,
    /// `after_script` (job value replaces the default one).
    pub after_script: Vec<String>,
    /// Job `variables:`.
    pub variables: Variables,
    /// `only:`.
    pub only: Option<RefFilter>,
    /// `except:`.
    pub except: Option<RefFilter>,
    /// `rules:` (exclusive with `only`/`except`).
    pub rules: Option<Vec<Rule>>,
    /// `environment:`.
    pub environment: Option<Environment>,
    /// `needs:`.
    pub needs: Option<Vec<Need>>,
    /// `dependencies:` (whose artifacts to fetch).
    pub dependencies: Option<Vec<String>>,
    /// `artifacts:`.
    pub artifacts: Option<Artifacts>,
    /// `allow_failure:`, `None` when absent (the default then depends on `when`).
    pub allow_failure: Option<AllowFailure>,
    /// `when:`.
    pub when: When,
    /// `start_in:` of a `when: delayed` job (GitLab's duration text, e.g. `30 minutes`).
    pub start_in: Option<String>,
    /// `inherit:variables`: which global `variables:` the job gets.
    pub inherit_variables: Inherit,
    /// `cache:` entries (job value, else `default:cache` or the global `cache:`).
    pub cache: Vec<Cache>,
    /// `retry:` (job value, else `default:retry`).
    pub retry: Option<Retry>,
    /// `timeout:` (job value, else `default:timeout`).
    pub timeout: Option<Timeout>,
    /// For one instance of a `parallel:` job (`test 2/3`, `test: [a, b]`), the job's name as
    /// written.
    pub parallel_of: Option<String>,
    /// 1-based line of the job in its file (0 if unknown).
    pub line: usize,
}

/// An `inherit:default` or `inherit:variables` value: everything (`true`, the default),
/// nothing (`false`), or only the listed names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Inherit {
    /// `true`.
    #[default]
    All,
    /// `false`.
    Nothing,
    /// A list of keywords or variable names.
    Only(Vec<String>),
}

impl Inherit {
    /// Whether `name` is inherited.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Inherit::All => true,
            Inherit::Nothing => false,
            Inherit::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// `when:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// Run when all jobs of earlier stages succeeded (or were allowed to fail).
    #[default]
    OnSuccess,
    /// Run only when a job of an earlier stage failed.
    OnFailure,
    /// Run regardless.
    Always,
    /// Run only on request (`--manual` or `--job`).
    Manual,
    /// Never run (`rules` only).
    Never,
    /// `delayed` (with `start_in`): GitLab starts it that long after its stage may start;
    /// a local run starts it at once and says so in the log.
    Delayed,
}

impl When {
    pub(crate) fn parse(s: &str) -> Option<When> {
        Some(match s {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "never" => When::Never,
            "delayed" => When::Delayed,
            _ => return None,
        })
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Never => "never",
            When::Delayed => "delayed",
        })
    }
}

/// `allow_failure:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowFailure {
    /// A failure fails the pipeline (the default, except for manual jobs).
    #[default]
    No,
    /// Any failure is allowed.
    Yes,
    /// Only these exit codes are allowed failures (`allow_failure: exit_codes:`).
    ExitCodes(Vec<i32>),
}

impl AllowFailure {
    /// Whether a job that failed with `exit_code` is an allowed failure.
    pub fn allows(&self, exit_code: Option<i32>) -> bool {
        match self {
            AllowFailure::No => false,
            AllowFailure::Yes => true,
            AllowFailure::ExitCodes(codes) => exit_code.is_some_and(|c| codes.contains(&c)),
        }
    }
}

/// `only:` / `except:`.
#[derive(Debug, Clone, Default)]
pub struct RefFilter {
    /// Ref patterns: a branch or tag name, `/regex/`, or the keywords `branches`, `tags`,
    /// `pushes`, `web`, `api`, `schedules`, `triggers`, `merge_requests`, `external`, `pipelines`.
    pub refs: Vec<String>,
    /// `variables:` expressions (any true is a match).
    pub variables: Vec<(String, Expr)>,
}

/// One `rules:` entry.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// The `if:` expression and its text (no `if` = always matches).
    pub condition: Option<(String, Expr)>,
    /// `when:` (default `on_success`).
    pub when: Option<When>,
    /// `variables:` applied when this rule matches.
    pub variables: Variables,
    /// `allow_failure:` overriding the job's when this rule matches.
    pub allow_failure: Option<bool>,
    /// `start_in:` with `when: delayed`.
    pub start_in: Option<String>,
    /// `exists:` — the rule matches only when one of these paths or globs names a file of the
    /// project (variables expanded first).
    pub exists: Option<Vec<String>>,
    /// `changes:` — the rule matches only when a changed file matches one of these paths or
    /// globs (see [`PipelineContext::changed_files`](crate::PipelineContext::changed_files)).
    pub changes: Option<Vec<String>>,
}

/// `environment:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// `name` (unexpanded).
    pub name: String,
    /// `url` (unexpanded).
    pub url: Option<String>,
}

/// One `needs:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The needed job.
    pub job: String,
    /// Whether to fetch its artifacts (default true).
    pub artifacts: bool,
    /// `optional: true`: no error when the job is not in the pipeline.
    pub optional: bool,
}

/// `artifacts:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Artifacts {
    /// Paths relative to the project directory (`*` and `**` globs allowed).
    pub paths: Vec<String>,
    /// When to save them: `on_success` (default), `on_failure` or `always`.
    pub when: When,
    /// `reports:dotenv`: files of `KEY=VALUE` lines whose variables the jobs that receive
    /// this job's artifacts get.
    pub dotenv: Vec<String>,
}

/// One `cache:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// `key` (default `default`).
    pub key: CacheKey,
    /// `paths` to save (globs as in `artifacts:paths`).
    pub paths: Vec<String>,
    /// `policy`.
    pub policy: CachePolicy,
    /// `when` to save: `on_success` (default), `on_failure` or `always`.
    pub when: When,
    /// `untracked: true`: also every file git does not track (not supported locally: warned).
    pub untracked: bool,
    /// `fallback_keys`, tried in order when `key` has no cache yet.
    pub fallback_keys: Vec<String>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            key: CacheKey::Text("default".into()),
            paths: Vec::new(),
            policy: CachePolicy::PullPush,
            when: When::OnSuccess,
            untracked: false,
            fallback_keys: Vec::new(),
        }
    }
}

/// `cache:key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKey {
    /// A text key (variables expanded at run time).
    Text(String),
    /// `key:files` (one or two files) with an optional `prefix`.
    Files {
        /// The files whose content makes the key.
        files: Vec<String>,
        /// `key:prefix`.
        prefix: Option<String>,
    },
}

/// `cache:policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Restore before the job, never save.
    Pull,
    /// Save after the job, never restore.
    Push,
    /// Both (the default).
    PullPush,
}

/// `retry:` — run a failed job again, up to `max` more times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Extra attempts, 0 to 2 (GitLab's bounds).
    pub max: u8,
    /// `retry:when` failure kinds (`always` when empty).
    pub when: Vec<String>,
    /// `retry:exit_codes`: retry only script failures with these codes (any when empty).
    pub exit_codes: Vec<i32>,
}

impl Retry {
    /// Whether a failure of kind `reason` (GitLab's failure reasons: `script_failure`,
    /// `job_execution_timeout`, `runner_system_failure`) with `exit_code` is retried.
    pub fn applies(&self, reason: &str, exit_code: Option<i32>) -> bool {
        let kind_ok = self.when.is_empty()
            || self.when.iter().any(|w| {
                w == "always"
                    || w == reason
                    || (w == "stuck_or_timeout_failure" && reason == "job_execution_timeout")
                    || (w == "unknown_failure" && reason == "runner_system_failure")
            });
        let code_ok =
            self.exit_codes.is_empty() || exit_code.is_some_and(|c| self.exit_codes.contains(&c));
        kind_ok && code_ok
    }
}

/// `timeout:` as written and in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    /// The text (`1h 30m`).
    pub text: String,
    /// Its length.
    pub secs: u64,
}

impl Pipeline {
    /// The job with this name.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Variable names the file uses (`$NAME`, `${NAME}` in variables, scripts, images,
    /// environments, rules and `only`/`except` expressions) but does not define, leaving out
    /// the names rbuild predefines: what the user has to supply as secret variables (the
    /// seed's `GOOGLE_REGISTRY_TOKEN`, `GOOGLE_PROJECT_ID`, and `CI_REGISTRY`, which only a
    /// GitLab server with a registry would define).
    pub fn undefined_variables(&self) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        let mut scan = |text: &str| {
            expand_with(text, |n| {
                used.insert(n.to_owned());
                None
            });
        };
        let scan_vars = |vars: &Variables, scan: &mut dyn FnMut(&str)| {
            vars.iter()
                .filter(|v| v.expand)
                .for_each(|v| scan(&v.value));
        };
        scan_vars(&self.variables, &mut scan);
        for rule in self.workflow_rules.iter().flatten() {
            rule.condition.iter().for_each(|(t, _)| scan(t));
            scan_vars(&rule.variables, &mut scan);
        }
        for job in &self.jobs {
            scan_vars(&job.variables, &mut scan);
            job.before_script
                .iter()
                .chain(&job.script)
                .chain(&job.after_script)
                .for_each(|l| scan(l));
            if let Some(i) = &job.image {
                scan(&i.name);
            }
            if let Some(e) = &job.environment {
                scan(&e.name);
                e.url.iter().for_each(|u| scan(u));
            }
            for rule in job.rules.iter().flatten() {
                rule.condition.iter().for_each(|(t, _)| scan(t));
                scan_vars(&rule.variables, &mut scan);
            }
            for f in job.only.iter().chain(&job.except) {
                f.variables.iter().for_each(|(t, _)| scan(t));
            }
        }
        let defined = |n: &str| {
            self.variables.get(n).is_some()
                || self.jobs.iter().any(|j| j.variables.get(n).is_some())
                || crate::predefined::is_predefined(n)
        };
        used.into_iter().filter(|n| !defined(n)).collect()
    }

    /// Secret variables taken from the environment: every [undefined
    /// variable](Pipeline::undefined_variables) that `lookup` (e.g. `std::env::var`) knows.
    /// Shell-level names such as `HOME` or `PATH` are never taken: scripts see them anyway.
    pub fn secrets_from(&self, lookup: impl Fn(&str) -> Option<String>) -> Variables {
        const SHELL: [&str; 8] = [
            "HOME", "PATH", "PWD", "USER", "SHELL", "TERM", "LANG", "HOSTNAME",
        ];
        let mut vars = Variables::new();
        for name in self.undefined_variables() {
            if SHELL.contains(&name.as_str()) {
                continue;
            }
            if let Some(value) = lookup(&name) {
                vars.push(Variable::secret(name, value));
            }
        }
        vars
    }
}
