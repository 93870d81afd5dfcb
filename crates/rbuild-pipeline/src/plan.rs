//! The planner: which jobs run, in which stage, with which environment, and why the others
//! do not. No processes and no writes; the only reads are `rules:exists` lookups, through
//! descriptors under the project directory (changed files for `rules:changes` come with the
//! [`PipelineContext`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::{Error, Result};
use crate::expr::parse_pattern;
use crate::model::{AllowFailure, Artifacts, Job, Pipeline, RefFilter, Rule, When};
use crate::predefined::{GitRef, PipelineContext, job_variables};
use crate::variables::{Variables, expand};

/// Options of a plan (the CLI's selection flags).
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--job NAME`: run only these jobs (manual ones included).
    pub jobs: Vec<String>,
    /// `--manual`: run manual jobs too.
    pub manual: bool,
    /// Secret/pipeline variables (`--var`, `--var-file`, the environment): highest precedence,
    /// masked in output.
    pub variables: Variables,
}

impl PlanOptions {
    /// Selects jobs by name (`--job`).
    #[must_use]
    pub fn jobs(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.jobs = names.into_iter().map(Into::into).collect();
        self
    }

    /// Includes manual jobs (`--manual`).
    #[must_use]
    pub fn manual(mut self, yes: bool) -> Self {
        self.manual = yes;
        self
    }

    /// Sets the secret variables.
    #[must_use]
    pub fn variables(mut self, vars: Variables) -> Self {
        self.variables = vars;
        self
    }
}

/// The result of planning.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Stages that have at least one job to run, in order.
    pub stages: Vec<PlannedStage>,
    /// Jobs that do not run, with the reason, in file order.
    pub skipped: Vec<SkippedJob>,
}

/// A stage and its jobs.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// Stage name.
    pub name: String,
    /// Jobs to run, in file order.
    pub jobs: Vec<PlannedJob>,
}

/// A job that is part of the plan, with everything an executor needs.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// Job name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// `CI_JOB_ID`.
    pub id: u64,
    /// The image after variable expansion.
    pub image: Option<String>,
    /// `image:entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `before_script` lines (unexpanded: the shell expands them).
    pub before_script: Vec<String>,
    /// `script` lines.
    pub script: Vec<String>,
    /// `after_script` lines.
    pub after_script: Vec<String>,
    /// All variable layers (predefined, global, job, rules, secret), with their masked flags.
    pub variables: Variables,
    /// The job's environment: `variables` expanded.
    pub env: BTreeMap<String, String>,
    /// Effective `when` (from the matching rule or the job).
    pub when: When,
    /// Effective `allow_failure` (manual jobs default to allowed, as in GitLab).
    pub allow_failure: AllowFailure,
    /// `environment:` after expansion, with its slug.
    pub environment: Option<PlannedEnvironment>,
    /// Artifacts this job saves.
    pub artifacts: Option<Artifacts>,
    /// Jobs whose artifacts this job receives (from `needs`, `dependencies`, or all earlier
    /// stages), in order.
    pub artifacts_from: Vec<String>,
    /// The planned jobs it waits for when it has `needs:` (`Some(vec![])` for `needs: []`: it
    /// starts at once); `None` means stage order: it waits for every job of earlier stages.
    /// Optional needs and needs left out by `--job` that are not in the plan are dropped.
    pub needs: Option<Vec<String>>,
    /// `start_in` of a `when: delayed` job (from the job or its matching rule).
    pub start_in: Option<String>,
    /// `cache:` entries.
    pub cache: Vec<crate::model::Cache>,
    /// `retry:`.
    pub retry: Option<crate::model::Retry>,
    /// `timeout:`.
    pub timeout: Option<crate::model::Timeout>,
    /// Why it runs.
    pub reason: String,
}

/// An expanded `environment:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEnvironment {
    /// `CI_ENVIRONMENT_NAME`.
    pub name: String,
    /// `CI_ENVIRONMENT_SLUG`.
    pub slug: String,
    /// `CI_ENVIRONMENT_URL`.
    pub url: Option<String>,
}

/// A job left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedJob {
    /// Job name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// Why it does not run.
    pub reason: String,
}

impl Plan {
    /// All planned jobs in stage order.
    pub fn jobs(&self) -> impl Iterator<Item = &PlannedJob> {
        self.stages.iter().flat_map(|s| s.jobs.iter())
    }

    /// The planned job with this name.
    pub fn job(&self, name: &str) -> Option<&PlannedJob> {
        self.jobs().find(|j| j.name == name)
    }

    /// Names of planned jobs, in stage order.
    pub fn job_names(&self) -> Vec<&str> {
        self.jobs().map(|j| j.name.as_str()).collect()
    }
}

impl fmt::Display for Plan {
    /// `rbuild pipeline plan` output: stages → jobs with the reason, then skipped jobs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stage in &self.stages {
            writeln!(f, "{}:", stage.name)?;
            for j in &stage.jobs {
                let when = match (j.when, &j.start_in) {
                    (When::OnSuccess, _) => String::new(),
                    (When::Delayed, Some(d)) => format!(" [delayed, start_in {d}]"),
                    (w, _) => format!(" [{w}]"),
                };
                let env = j
                    .environment
                    .as_ref()
                    .map(|e| format!(" → env {} ({})", e.name, e.slug))
                    .unwrap_or_default();
                writeln!(f, "  {}{when}{env}: {}", j.name, j.reason)?;
            }
        }
        if !self.skipped.is_empty() {
            writeln!(f, "skipped:")?;
            for s in &self.skipped {
                writeln!(f, "  {} ({}): {}", s.name, s.stage, s.reason)?;
            }
        }
        Ok(())
    }
}

/// Plans `pipeline` for the ref and variables of `cx`.
///
/// Selection follows GitLab: `rules` (first matching rule wins, none matching = not added),
/// else `only`/`except` (default `only: [branches, tags]`), then `when: manual` jobs only on
/// request, then `needs` of jobs that do not run.
///
/// # Errors
///
/// [`Error::UnknownJob`] for a `--job` name not in the pipeline, [`Error::CircularVariable`] for
/// variables that refer to each other in a cycle.
pub fn plan(pipeline: &Pipeline, cx: &PipelineContext, opts: &PlanOptions) -> Result<Plan> {
    for name in &opts.jobs {
        if !pipeline
            .jobs
            .iter()
            .any(|j| j.name == *name || j.parallel_of.as_ref() == Some(name))
        {
            return Err(Error::UnknownJob { name: name.clone() });
        }
    }
    let mut base = cx.variables();
    base.extend(&pipeline.variables);

    let mut skipped = Vec::new();
    let mut workflow_block = None;
    let mut workflow_vars = Variables::new();
    if let Some(rules) = &pipeline.workflow_rules {
        let mut with_secrets = base.clone();
        with_secrets.extend(&opts.variables);
        let values = with_secrets.expand_all()?;
        match first_match(rules, &values, cx) {
            Some((_, rule)) if rule.when != Some(When::Never) => {
                workflow_vars.extend(&rule.variables);
            }
            Some((i, _)) => {
                workflow_block = Some(format!(
                    "workflow:rules: rule {} matched with when: never",
                    i + 1
                ))
            }
            None => {
                workflow_block =
                    Some("workflow:rules: no rule matched, so no pipeline is created".into())
            }
        }
    }

    let mut planned: Vec<PlannedJob> = Vec::new();
    let mut not_selected = BTreeSet::new();
    let mut blocking: Vec<(usize, String)> = Vec::new();
    let stage_index = |s: &str| {
        pipeline
            .stages
            .iter()
            .position(|x| x == s)
            .unwrap_or(usize::MAX)
    };
    let mut ordered: Vec<(usize, &Job)> = pipeline.jobs.iter().enumerate().collect();
    ordered.sort_by_key(|(i, j)| (stage_index(&j.stage), *i));

    for (index, job) in ordered {
        let skip = |reason: String| SkippedJob {
            name: job.name.clone(),
            stage: job.stage.clone(),
            reason,
        };
        if let Some(reason) = &workflow_block {
            skipped.push(skip(reason.clone()));
            continue;
        }
        // `inherit:variables` filters the global `variables:` only; predefined and
        // `workflow:rules:variables` always reach the job.
        let mut vars = cx.variables();
        for v in pipeline.variables.iter() {
            if job.inherit_variables.allows(&v.name) {
                vars.push(v.clone());
            }
        }
        vars.extend(&workflow_vars);
        vars.extend(&job.variables);
        let mut with_secrets = vars.clone();
        with_secrets.extend(&opts.variables);
        let values = with_secrets.expand_all()?;

        let (when, reason, rule_vars, rule_allow, rule_start_in, manual_by_rule) = match &job.rules
        {
            Some(rules) => match first_match(rules, &values, cx) {
                None => {
                    skipped.push(skip("rules: no rule matched".into()));
                    continue;
                }
                Some((i, rule)) => {
                    let when = rule.when.unwrap_or(job.when);
                    let what = match (&rule.condition, &rule.exists, &rule.changes) {
                        (Some((t, _)), ..) => format!("`if: {t}` matched"),
                        (None, Some(paths), _) => {
                            format!("`exists: {}` matched", paths.join(", "))
                        }
                        (None, None, Some(paths)) => {
                            format!("`changes: {}` matched", paths.join(", "))
                        }
                        (None, None, None) => "has no `if`".to_owned(),
                    };
                    if when == When::Never {
                        skipped.push(skip(format!(
                            "rules: rule {} {what} with when: never",
                            i + 1
                        )));
                        continue;
                    }
                    (
                        when,
                        format!("rules: rule {} {what}", i + 1),
                        rule.variables.clone(),
                        rule.allow_failure,
                        rule.start_in.clone(),
                        rule.when == Some(When::Manual),
                    )
                }
            },
            None => match only_except(job, cx, &values) {
                Filtered::Runs(reason) => (job.when, reason, Variables::new(), None, None, false),
                Filtered::Skipped(reason) => {
                    skipped.push(skip(reason));
                    continue;
                }
            },
        };
        let allow_failure = match (rule_allow, &job.allow_failure) {
            (Some(true), _) => AllowFailure::Yes,
            (Some(false), _) => AllowFailure::No,
            (None, Some(a)) => a.clone(),
            // GitLab: manual jobs default to `allow_failure: true` (they do not block), except
            // when `when: manual` comes from a rule, where the default is `false` (the
            // `when: manual` keyword docs).
            (None, None) if when == When::Manual && !manual_by_rule => AllowFailure::Yes,
            (None, None) => AllowFailure::No,
        };
        // `--job NAME` of a `parallel:` job selects all its instances.
        let selected = opts.jobs.contains(&job.name)
            || job
                .parallel_of
                .as_ref()
                .is_some_and(|b| opts.jobs.contains(b));
        if !opts.jobs.is_empty() && !selected {
            not_selected.insert(job.name.clone());
            skipped.push(skip("not selected with --job".into()));
            continue;
        }
        if when == When::Manual && !opts.manual && !selected {
            if allow_failure == AllowFailure::No {
                // A blocking manual job (`allow_failure: false`, GitLab's default only for
                // manual jobs from `rules`) holds the pipeline: later stages wait for it to be
                // played ("Blocking manual jobs" in GitLab's job control docs).
                blocking.push((stage_index(&job.stage), job.name.clone()));
                skipped.push(skip(
                    "manual job (blocking: allow_failure: false): run it with --manual or --job"
                        .into(),
                ));
            } else {
                skipped.push(skip("manual job: run it with --manual or --job".into()));
            }
            continue;
        }
        let start_in = if when == When::Delayed {
            rule_start_in.or_else(|| job.start_in.clone())
        } else {
            None
        };

        vars.extend(&rule_vars);
        vars.extend(&opts.variables);
        // The environment name may use any variable; the slug is then derived from the result.
        let pre_env = vars.expand_all()?;
        let environment = job.environment.as_ref().map(|e| {
            let name = expand(&e.name, &pre_env);
            let slug = crate::slug::environment_slug(&name);
            // The URL may use the environment's own name and slug (the usual review-app form
            // `https://$CI_ENVIRONMENT_SLUG.example.com`).
            let mut with_env = pre_env.clone();
            with_env.insert("CI_ENVIRONMENT_NAME".into(), name.clone());
            with_env.insert("CI_ENVIRONMENT_SLUG".into(), slug.clone());
            let url = e.url.as_ref().map(|u| expand(u, &with_env));
            PlannedEnvironment { name, slug, url }
        });
        let id = cx
            .pipeline_id
            .saturating_mul(1000)
            .saturating_add(index as u64 + 1);
        let mut all = job_variables(
            &job.name,
            &job.stage,
            id,
            environment
                .as_ref()
                .map(|e| (e.name.as_str(), e.url.as_deref())),
        );
        // Job-level predefined variables sit just above the pipeline-level ones: user
        // variables may override them, as in GitLab.
        let mut layered = cx.variables();
        layered.extend(&all);
        layered.extend(&vars);
        all = layered;
        let env = all.expand_all()?;
        let image = job.image.as_ref().map(|i| expand(&i.name, &env));
        planned.push(PlannedJob {
            name: job.name.clone(),
            stage: job.stage.clone(),
            id,
            image,
            entrypoint: job.image.as_ref().and_then(|i| i.entrypoint.clone()),
            before_script: job.before_script.clone(),
            script: job.script.clone(),
            after_script: job.after_script.clone(),
            variables: all,
            env,
            when,
            allow_failure,
            environment,
            artifacts: job.artifacts.clone(),
            artifacts_from: Vec::new(),
            needs: job
                .needs
                .as_ref()
                .map(|n| n.iter().map(|n| n.job.clone()).collect()),
            start_in,
            cache: job.cache.clone(),
            retry: job.retry.clone(),
            timeout: job.timeout.clone(),
            reason,
        });
    }
    drop_unreachable(
        pipeline,
        &mut planned,
        &mut skipped,
        &not_selected,
        &blocking,
        stage_index,
    );
    let names = planned_names(&planned);
    for i in 0..planned.len() {
        // Planned jobs all come from the pipeline.
        let Some(job) = pipeline.job(&planned[i].name) else {
            continue;
        };
        planned[i].artifacts_from = artifact_sources(job, &planned[..i], &planned);
        if let Some(needs) = &mut planned[i].needs {
            // Optional needs, and needs left out with `--job`, that are not planned: nothing to
            // wait for.
            needs.retain(|n| names.contains(n));
        }
    }

    let mut stages: Vec<PlannedStage> = Vec::new();
    for job in planned {
        match stages.last_mut() {
            Some(s) if s.name == job.stage => s.jobs.push(job),
            _ => stages.push(PlannedStage {
                name: job.stage.clone(),
                jobs: vec![job],
            }),
        }
    }
    // Report skipped jobs in file order, like the pipeline file reads.
    skipped.sort_by_key(|s| pipeline.jobs.iter().position(|j| j.name == s.name));
    Ok(Plan { stages, skipped })
}

/// The first rule whose `if` is true and, with `exists`, one of whose paths names a file of
/// the project (looked up under the project directory, never outside it), and with
/// `changes`, one of whose paths matches a changed file (always, when the pipeline has
/// nothing to compare with, as GitLab does for tags).
fn first_match<'r>(
    rules: &'r [Rule],
    values: &BTreeMap<String, String>,
    cx: &PipelineContext,
) -> Option<(usize, &'r Rule)> {
    let lookup = |n: &str| values.get(n).cloned();
    rules.iter().enumerate().find(|(_, r)| {
        r.condition.as_ref().is_none_or(|(_, e)| e.eval(&lookup))
            && r.exists.as_ref().is_none_or(|paths| {
                let paths: Vec<String> = paths.iter().map(|p| expand(p, values)).collect();
                crate::yaml::exists(&paths, &cx.project_dir)
            })
            && r.changes.as_ref().is_none_or(|paths| {
                let Some(changed) = &cx.changed_files else {
                    return true;
                };
                paths.iter().any(|p| {
                    let p = expand(p, values);
                    let p = p.trim_start_matches("./").trim_end_matches('/');
                    let re = crate::run::artifacts::glob_regex(p);
                    // GitLab matches each changed path with `File.fnmatch` (path-aware
                    // globs): a directory name alone matches no file below it.
                    changed
                        .iter()
                        .any(|f| f == p || re.as_ref().is_some_and(|re| re.is_match(f)))
                })
            })
    })
}

/// What `only`/`except` decided for a job, with the reason the plan prints. Not an error: a
/// job skipped by its filters is a normal outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filtered {
    Runs(String),
    Skipped(String),
}

fn only_except(job: &Job, cx: &PipelineContext, values: &BTreeMap<String, String>) -> Filtered {
    use Filtered::{Runs, Skipped};
    let default_only = RefFilter {
        refs: vec!["branches".into(), "tags".into()],
        variables: Vec::new(),
    };
    let (only, implicit) = match &job.only {
        Some(o) => (o, false),
        None => (&default_only, true),
    };
    let git_ref = &cx.git.git_ref;
    let kind = match git_ref {
        GitRef::Branch(_) => "branch",
        GitRef::Tag(_) => "tag",
    };
    let ref_name = git_ref.name();
    let matched = if only.refs.is_empty() {
        Some("any ref".to_owned())
    } else {
        only.refs
            .iter()
            .find(|p| ref_matches(p, git_ref, &cx.source))
            .cloned()
    };
    let Some(pattern) = matched else {
        let list = only
            .refs
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Skipped(format!("only: {list} does not match {kind} {ref_name}"));
    };
    let lookup = |n: &str| values.get(n).cloned();
    if !only.variables.is_empty() && !only.variables.iter().any(|(_, e)| e.eval(&lookup)) {
        return Skipped("only:variables: no expression is true".into());
    }
    if let Some(except) = &job.except {
        if let Some(p) = except
            .refs
            .iter()
            .find(|p| ref_matches(p, git_ref, &cx.source))
        {
            return Skipped(format!("except: `{p}` matches {kind} {ref_name}"));
        }
        if let Some((t, _)) = except.variables.iter().find(|(_, e)| e.eval(&lookup)) {
            return Skipped(format!("except:variables: `{t}` is true"));
        }
    }
    let only_text = if implicit {
        format!("no only: runs for every branch and tag ({kind} {ref_name})")
    } else {
        format!("only: `{pattern}` matches {kind} {ref_name}")
    };
    Runs(match &job.except {
        Some(_) => format!("{only_text}; except: no match"),
        None => only_text,
    })
}

/// One `only`/`except` ref pattern against the pipeline's ref
/// (`Gitlab::Ci::Build::Policy::Refs`: keywords, `/regex/`, else the exact name).
fn ref_matches(pattern: &str, git_ref: &GitRef, source: &str) -> bool {
    match pattern {
        "branches" => matches!(git_ref, GitRef::Branch(_)),
        "tags" => matches!(git_ref, GitRef::Tag(_)),
        "pushes" => source == "push",
        "api"
        | "web"
        | "schedules"
        | "triggers"
        | "pipelines"
        | "external"
        | "chat"
        | "merge_requests"
        | "external_pull_requests" => source == pattern.trim_end_matches('s') || source == pattern,
        p if p.starts_with('/') && p.len() > 1 => {
            parse_pattern(p).is_ok_and(|re| re.is_match(git_ref.name()))
        }
        // `name@group/project` restricts to a project; locally the project part always matches.
        p => p.split('@').next() == Some(git_ref.name()),
    }
}

fn planned_names(planned: &[PlannedJob]) -> BTreeSet<String> {
    planned.iter().map(|p| p.name.clone()).collect()
}

/// Removes, until nothing changes, the planned jobs that can never start: those whose needs
/// do not run (GitLab does not create them), and those held by a blocking manual job that
/// was not played (jobs of later stages in stage order, and through `needs` whatever needs
/// a held job). Needs of jobs left out with `--job` do not count: the user chose to run
/// without them.
fn drop_unreachable(
    pipeline: &Pipeline,
    planned: &mut Vec<PlannedJob>,
    skipped: &mut Vec<SkippedJob>,
    not_selected: &BTreeSet<String>,
    blocking: &[(usize, String)],
    stage_index: impl Fn(&str) -> usize,
) {
    loop {
        let names = planned_names(planned);
        let mut drop = None;
        for (i, p) in planned.iter().enumerate() {
            let Some(job) = pipeline.job(&p.name) else {
                continue;
            };
            let reason = match &job.needs {
                Some(needs) => needs
                    .iter()
                    .find(|n| {
                        !n.optional && !not_selected.contains(&n.job) && !names.contains(&n.job)
                    })
                    .map(|n| format!("needs `{}`, which does not run", n.job)),
                None => {
                    let own = stage_index(&p.stage);
                    blocking.iter().find(|(s, _)| *s < own).map(|(_, m)| {
                        format!("blocked: manual job `{m}` (allow_failure: false) was not played")
                    })
                }
            };
            if let Some(reason) = reason {
                drop = Some((i, reason));
                break;
            }
        }
        let Some((i, reason)) = drop else { return };
        let p = planned.remove(i);
        skipped.push(SkippedJob {
            name: p.name,
            stage: p.stage,
            reason,
        });
    }
}

/// Whose artifacts `job` receives: its `needs` (with `artifacts: true`), else its
/// `dependencies`, else every job of an earlier stage that keeps any (`earlier` are the jobs
/// planned before it, `all` the whole plan).
fn artifact_sources(job: &Job, earlier: &[PlannedJob], all: &[PlannedJob]) -> Vec<String> {
    let runs = |name: &str| all.iter().any(|p| p.name == name);
    if let Some(needs) = &job.needs {
        return needs
            .iter()
            .filter(|n| n.artifacts && runs(&n.job))
            .map(|n| n.job.clone())
            .collect();
    }
    if let Some(deps) = &job.dependencies {
        return deps.iter().filter(|d| runs(d)).cloned().collect();
    }
    // GitLab's default: artifacts of all jobs of earlier stages (only those that keep any,
    // files or a dotenv report).
    earlier
        .iter()
        .filter(|p| {
            p.stage != job.stage
                && p.artifacts
                    .as_ref()
                    .is_some_and(|a| !a.paths.is_empty() || !a.dotenv.is_empty())
        })
        .map(|p| p.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::predefined::GitInfo;

    #[test]
    fn rules_exists_looks_in_the_project_only() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("p");
        std::fs::create_dir_all(project.join("cmd/tool")).unwrap();
        std::fs::write(project.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(project.join("cmd/tool/main.go"), "package main\n").unwrap();
        // A sentinel beside the project, reachable only through a planted symlink.
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/secret.txt"), "x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), project.join("link")).unwrap();
        let pipeline = Pipeline::parse(
            "docker:\n  script: [build]\n  rules: [{exists: [Dockerfile]}]\n\
             go:\n  script: [go]\n  rules: [{exists: {paths: ['**/*.go']}, when: manual}]\n\
             rust:\n  script: [cargo]\n  rules: [{exists: [Cargo.toml]}]\n\
             escape:\n  script: [x]\n  rules: [{exists: [link/secret.txt]}]\n\
             by-var:\n  variables: {FILE: Dockerfile}\n  script: [x]\n  rules: [{if: '$CI_COMMIT_BRANCH', exists: [$FILE]}]\n",
            Path::new(".gitlab-ci.yml"),
            &project,
        )
        .unwrap();
        let git = GitInfo {
            sha: "0".repeat(40),
            git_ref: GitRef::Branch("main".into()),
            project_name: "p".into(),
            project_path: None,
            default_branch: "main".into(),
        };
        let plan = plan(
            &pipeline,
            &PipelineContext::new(git, &project),
            &PlanOptions::default().manual(true),
        )
        .unwrap();
        assert_eq!(plan.job_names(), ["docker", "go", "by-var"]);
        assert_eq!(
            plan.job("docker").unwrap().reason,
            "rules: rule 1 `exists: Dockerfile` matched"
        );
        assert_eq!(plan.job("go").unwrap().when, When::Manual);
        let skipped: Vec<_> = plan.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, ["rust", "escape"]);
    }

    #[test]
    fn rules_changes_match_changed_files_and_always_without_a_base() {
        let project = Path::new("/checkout");
        let pipeline = Pipeline::parse(
            "docs:\n  script: [x]\n  rules: [{changes: ['docs/**/*.md']}]\n\
             code:\n  script: [x]\n  rules: [{changes: {paths: ['src/*.rs', Cargo.toml]}}]\n\
             dir:\n  script: [x]\n  rules: [{changes: [src]}]\n",
            Path::new(".gitlab-ci.yml"),
            project,
        )
        .unwrap();
        let git = GitInfo {
            sha: "0".repeat(40),
            git_ref: GitRef::Branch("main".into()),
            project_name: "p".into(),
            project_path: None,
            default_branch: "main".into(),
        };
        let mut cx = PipelineContext::new(git, project);
        cx.changed_files = Some(vec!["docs/guide/intro.md".into(), "README.md".into()]);
        let names = |cx: &PipelineContext| {
            plan(&pipeline, cx, &PlanOptions::default())
                .unwrap()
                .job_names()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&cx), ["docs"]);
        cx.changed_files = Some(vec!["src/main.rs".into()]);
        assert_eq!(names(&cx), ["code"]);
        cx.changed_files = Some(vec!["src/deep/x.rs".into()]);
        assert!(names(&cx).is_empty());
        cx.changed_files = None;
        assert_eq!(names(&cx), ["docs", "code", "dir"]);
    }
}
