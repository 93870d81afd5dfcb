//! Turning the resolved YAML mapping into a typed [`Pipeline`], with GitLab's validation
//! messages and the list of keywords we ignore.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::expr::Expr;
use crate::model::{
    AllowFailure, Artifacts, Cache, CacheKey, CachePolicy, DEFAULT_STAGES, Environment, Image, Job,
    Need, Pipeline, RefFilter, Rule, Warning, When,
};
use crate::variables::{Variable, Variables};
use crate::yaml::Loaded;

/// Top-level keys that are keywords, not jobs (`Gitlab::Ci::Config::Entry::Root`).
const GLOBAL_KEYWORDS: [&str; 11] = [
    "image",
    "services",
    "stages",
    "types",
    "before_script",
    "after_script",
    "variables",
    "cache",
    "include",
    "default",
    "workflow",
];
const JOB_KEYWORDS: [&str; 21] = [
    "stage",
    "script",
    "before_script",
    "after_script",
    "image",
    "variables",
    "only",
    "except",
    "rules",
    "environment",
    "needs",
    "dependencies",
    "artifacts",
    "allow_failure",
    "when",
    "start_in",
    "inherit",
    "parallel",
    "retry",
    "timeout",
    "cache",
];

/// Every job keyword GitLab knows (`Gitlab::Ci::Config::Entry::Job::ALLOWED_KEYS` and the
/// keys of its bridge jobs), including those rbuild does not implement.
const GITLAB_JOB_KEYWORDS: [&str; 24] = [
    "coverage",
    "dast_configuration",
    "extends",
    "hooks",
    "id_tokens",
    "identity",
    "interruptible",
    "manual_confirmation",
    "pages",
    "publish",
    "release",
    "resource_group",
    "run",
    "secrets",
    "services",
    "tags",
    "trigger",
    "environment",
    "inherit",
    "parallel",
    "retry",
    "timeout",
    "cache",
    "start_in",
];

struct Ctx<'a> {
    loaded: &'a Loaded,
    unsupported: BTreeMap<String, Vec<String>>,
}

impl Ctx<'_> {
    fn unsupported(&mut self, keyword: &str, place: &str) {
        self.unsupported
            .entry(keyword.to_owned())
            .or_default()
            .push(place.to_owned());
    }
    fn err(&self, key: &str, message: String) -> Error {
        self.loaded.invalid(key, message)
    }
}

impl Pipeline {
    /// Reads and loads a pipeline file; `include: local` paths resolve against `project_dir`.
    /// `include:rules` see no variables: use [`Pipeline::load`] to give them the pipeline's.
    ///
    /// # Errors
    ///
    /// [`Error::ReadFile`] for unreadable files, [`Error::ParseYaml`] for invalid YAML and
    /// [`Error::Invalid`] (with file and line) for a configuration GitLab would reject, such as a
    /// job in an unknown stage.
    pub fn from_file(path: &Path, project_dir: &Path) -> Result<Pipeline> {
        Self::load(path, project_dir, &BTreeMap::new())
    }

    /// Reads and loads a pipeline file, evaluating `include:rules` against `variables` (the
    /// predefined and pipeline variables: GitLab gives include rules no job or global
    /// `variables:`). Included files are read through a descriptor of `project_dir` and never
    /// through a symlink out of it.
    ///
    /// # Errors
    ///
    /// As [`Pipeline::from_file`].
    pub fn load(
        path: &Path,
        project_dir: &Path,
        variables: &BTreeMap<String, String>,
    ) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_with(&text, path, project_dir, variables)
    }

    /// Loads a pipeline from text (`path` names it in errors).
    ///
    /// # Errors
    ///
    /// As [`Pipeline::from_file`].
    pub fn parse(text: &str, path: &Path, project_dir: &Path) -> Result<Pipeline> {
        Self::parse_with(text, path, project_dir, &BTreeMap::new())
    }

    /// Loads a pipeline from text with `include:rules` evaluated against `variables`.
    ///
    /// # Errors
    ///
    /// As [`Pipeline::from_file`].
    pub fn parse_with(
        text: &str,
        path: &Path,
        project_dir: &Path,
        variables: &BTreeMap<String, String>,
    ) -> Result<Pipeline> {
        let loaded = crate::yaml::load(text, path, project_dir, variables)?;
        build(&loaded, path)
    }
}

fn build(loaded: &Loaded, path: &Path) -> Result<Pipeline> {
    let root = &loaded.root;
    let mut cx = Ctx {
        loaded,
        unsupported: BTreeMap::new(),
    };
    let mut stages = vec![".pre".to_owned()];
    match root.get("stages") {
        Some(Value::Sequence(s)) => {
            for st in s {
                let name = scalar(st)
                    .ok_or_else(|| cx.err("stages", "`stages` entries are names".into()))?;
                if !stages.contains(&name) {
                    stages.push(name);
                }
            }
        }
        None => stages.extend(DEFAULT_STAGES.iter().map(|s| (*s).to_owned())),
        Some(_) => return Err(cx.err("stages", "`stages` must be a list of stage names".into())),
    }
    stages.push(".post".into());

    let variables = match root.get("variables") {
        Some(v) => {
            parse_variables(v).map_err(|m| cx.err("variables", format!("variables: {m}")))?
        }
        None => Variables::new(),
    };

    // Defaults: `default:` wins over the deprecated top-level `image`/`before_script`/`after_script`.
    let default = root
        .get("default")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    for key in default.keys().filter_map(Value::as_str) {
        if ![
            "image",
            "before_script",
            "after_script",
            "retry",
            "timeout",
            "cache",
        ]
        .contains(&key)
        {
            cx.unsupported(&format!("default:{key}"), "(global)");
        }
    }
    let pick = |key: &str| default.get(key).or_else(|| root.get(key));
    let default_image = pick("image")
        .map(|v| parse_image(v).map_err(|m| cx.err("image", m.to_string())))
        .transpose()?;
    let default_before = pick("before_script")
        .map(|v| script(v).map_err(|m| cx.err("before_script", m.to_string())))
        .transpose()?;
    let default_after = pick("after_script")
        .map(|v| script(v).map_err(|m| cx.err("after_script", m.to_string())))
        .transpose()?;

    let default_retry = default
        .get("retry")
        .map(|v| parse_retry(v).map_err(|m| cx.err("default", format!("default: retry: {m}"))))
        .transpose()?;
    let default_cache = pick("cache")
        .map(|v| parse_cache(v, &mut cx).map_err(|m| cx.err("cache", format!("cache: {m}"))))
        .transpose()?;
    let default_timeout = default
        .get("timeout")
        .map(|v| parse_timeout(v).map_err(|m| cx.err("default", format!("default: {m}"))))
        .transpose()?;
    let workflow_rules = match root.get("workflow").and_then(Value::as_mapping) {
        Some(w) => {
            for key in w.keys().filter_map(Value::as_str).filter(|k| *k != "rules") {
                cx.unsupported(&format!("workflow:{key}"), "(global)");
            }
            w.get("rules")
                .map(|r| parse_rules(r, "workflow", &mut cx))
                .transpose()?
        }
        None => None,
    };

    let mut jobs = Vec::new();
    for (key, value) in root {
        let Some(name) = key.as_str() else {
            return Err(cx.err("", format!("top-level key {key:?} is not a string")));
        };
        if name.starts_with('.') {
            continue;
        }
        if GLOBAL_KEYWORDS.contains(&name) {
            if ["services", "types"].contains(&name) {
                cx.unsupported(name, "(global)");
            }
            continue;
        }
        let Value::Mapping(map) = value else {
            return Err(cx.err(
                name,
                format!("job {name:?}: a job must be a mapping of keywords"),
            ));
        };
        let mut job = parse_job(name, map, &mut cx)?;
        if !stages.contains(&job.stage) {
            let list = stages[1..stages.len() - 1].join(", ");
            return Err(cx.err(
                name,
                format!(
                    "job {name:?}: chosen stage `{}` does not exist; available stages are {list}",
                    job.stage
                ),
            ));
        }
        // `inherit:default` decides which `default:` keywords reach the job (GitLab's
        // `Entry::Inherit::Default`); the job's own value wins either way.
        let inherit = inherit_default(map, name, &cx)?;
        if job.image.is_none() && inherit.allows("image") {
            job.image.clone_from(&default_image);
        }
        if !map.contains_key("before_script") && inherit.allows("before_script") {
            job.before_script = default_before.clone().unwrap_or_default();
        }
        if !map.contains_key("after_script") && inherit.allows("after_script") {
            job.after_script = default_after.clone().unwrap_or_default();
        }
        if !map.contains_key("cache") && inherit.allows("cache") {
            job.cache = default_cache.clone().unwrap_or_default();
        }
        if job.retry.is_none() && inherit.allows("retry") {
            job.retry.clone_from(&default_retry);
        }
        if job.timeout.is_none() && inherit.allows("timeout") {
            job.timeout.clone_from(&default_timeout);
        }
        match map.get("parallel") {
            None => jobs.push(job),
            Some(v) => {
                let instances = parallel_instances(name, v)
                    .map_err(|m| cx.err(name, format!("job {name:?}: parallel: {m}")))?;
                let total = instances.len().to_string();
                for (index, (instance, vars)) in instances.into_iter().enumerate() {
                    let mut one = job.clone();
                    one.name = instance;
                    one.parallel_of = Some(name.to_owned());
                    // Matrix values override the job's own variables (GitLab puts them in the
                    // job's `variables:`); the node variables say which instance this is.
                    one.variables.extend(&vars);
                    one.variables.set("CI_NODE_INDEX", (index + 1).to_string());
                    one.variables.set("CI_NODE_TOTAL", total.clone());
                    jobs.push(one);
                }
            }
        }
    }
    expand_parallel_references(&mut jobs);
    check_references(&jobs, &stages, &cx)?;
    if jobs.is_empty() {
        return Err(Error::Invalid {
            path: path.to_owned(),
            line: 0,
            key: String::new(),
            message:
                "the pipeline has no visible jobs (a job is a top-level key not starting with `.`)"
                    .into(),
        });
    }

    let mut warnings: Vec<Warning> = loaded
        .ignored_includes
        .iter()
        .cloned()
        .map(Warning::Other)
        .collect();
    if !cx.unsupported.is_empty() {
        warnings.insert(0, Warning::UnsupportedKeywords(cx.unsupported));
    }
    Ok(Pipeline {
        path: path.to_owned(),
        stages,
        variables,
        workflow_rules,
        jobs,
        warnings,
    })
}

/// GitLab rejects `needs`/`dependencies` naming a job that does not exist or does not come
/// earlier (`needs` may also name a job of the same stage since GitLab 14.2).
fn check_references(jobs: &[Job], stages: &[String], cx: &Ctx<'_>) -> Result<()> {
    let stage_of = |name: &str| {
        jobs.iter()
            .find(|j| j.name == name)
            .and_then(|j| stages.iter().position(|s| *s == j.stage))
    };
    for job in jobs {
        let own = stages.iter().position(|s| *s == job.stage).unwrap_or(0);
        for need in job.needs.iter().flatten() {
            match stage_of(&need.job) {
                None if need.optional => {}
                None => {
                    return Err(cx.err(
                        &job.name,
                        format!("job {:?}: undefined need: {}", job.name, need.job),
                    ));
                }
                Some(s) if s > own => {
                    return Err(cx.err(
                        &job.name,
                        format!(
                            "job {:?}: need {} is in a later stage ({})",
                            job.name, need.job, stages[s]
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(cycle) = needs_cycle(job, jobs) {
            return Err(cx.err(
                &job.name,
                format!(
                    "job {:?}: `needs` form a cycle: {}",
                    job.name,
                    cycle.join(" -> ")
                ),
            ));
        }
        for dep in job.dependencies.iter().flatten() {
            if stage_of(dep).is_none_or(|s| s >= own) {
                return Err(cx.err(
                    &job.name,
                    format!(
                        "job {:?}: dependency {dep} is not defined in an earlier stage",
                        job.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A `needs` path from `start` back to itself, if any (only jobs of one stage can form one,
/// since needs never point to a later stage).
fn needs_cycle(start: &Job, jobs: &[Job]) -> Option<Vec<String>> {
    fn walk<'j>(
        job: &'j Job,
        jobs: &'j [Job],
        path: &mut Vec<&'j str>,
        seen: &mut Vec<&'j str>,
    ) -> bool {
        for need in job.needs.iter().flatten() {
            if need.job == path[0] {
                path.push(&need.job);
                return true;
            }
            if seen.contains(&need.job.as_str()) {
                continue;
            }
            let Some(next) = jobs.iter().find(|j| j.name == need.job) else {
                continue;
            };
            seen.push(&next.name);
            path.push(&next.name);
            if walk(next, jobs, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.name.as_str()];
    let mut seen = Vec::new();
    walk(start, jobs, &mut path, &mut seen).then(|| path.into_iter().map(str::to_owned).collect())
}

fn parse_job(name: &str, map: &Mapping, cx: &mut Ctx<'_>) -> Result<Job> {
    let line = cx.loaded.locate(name).1;
    let e = |cx: &Ctx<'_>, m: String| cx.err(name, format!("job {name:?}: {m}"));
    for key in map.keys().filter_map(Value::as_str) {
        if JOB_KEYWORDS.contains(&key) {
            continue;
        }
        // A GitLab keyword we do not implement is warned about; anything else is a typo or
        // a foreign key, which GitLab rejects ("config contains unknown keys").
        if !GITLAB_JOB_KEYWORDS.contains(&key) {
            return Err(e(
                cx,
                format!("unknown keyword `{key}` (GitLab rejects a job with unknown keys)"),
            ));
        }
        cx.unsupported(key, name);
    }
    let Some(script_value) = map.get("script") else {
        return Err(e(cx, "a job needs a `script`".into()));
    };
    let script_lines = script(script_value).map_err(|m| e(cx, format!("script: {m}")))?;
    let opt_script = |key: &str| {
        map.get(key)
            .map(script)
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let before_script =
        opt_script("before_script").map_err(|m| e(cx, format!("before_script: {m}")))?;
    let after_script =
        opt_script("after_script").map_err(|m| e(cx, format!("after_script: {m}")))?;
    let stage = match map.get("stage") {
        Some(v) => scalar(v).ok_or_else(|| e(cx, "`stage` must be a name".into()))?,
        None => "test".to_owned(),
    };
    let image = map
        .get("image")
        .map(parse_image)
        .transpose()
        .map_err(|m| e(cx, m.to_string()))?;
    let variables = match map.get("variables") {
        Some(v) => parse_variables(v).map_err(|m| e(cx, format!("variables: {m}")))?,
        None => Variables::new(),
    };
    let only = map
        .get("only")
        .map(|v| parse_filter(v, name, "only", cx))
        .transpose()?;
    let except = map
        .get("except")
        .map(|v| parse_filter(v, name, "except", cx))
        .transpose()?;
    let rules = map
        .get("rules")
        .map(|v| parse_rules(v, name, cx))
        .transpose()?;
    if rules.is_some() && (only.is_some() || except.is_some()) {
        return Err(e(
            cx,
            "`rules` cannot be used with `only` or `except`".into(),
        ));
    }
    let environment = match map.get("environment") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Environment {
            name: s.clone(),
            url: None,
        }),
        Some(Value::Mapping(m)) => {
            for key in m
                .keys()
                .filter_map(Value::as_str)
                .filter(|k| !["name", "url"].contains(k))
            {
                cx.unsupported(&format!("environment:{key}"), name);
            }
            let env_name = m
                .get("name")
                .and_then(scalar)
                .ok_or_else(|| e(cx, "`environment` needs a `name`".into()))?;
            Some(Environment {
                name: env_name,
                url: m.get("url").and_then(scalar),
            })
        }
        Some(_) => return Err(e(cx, "`environment` must be a name or a mapping".into())),
    };
    let needs = match map.get("needs") {
        None => None,
        Some(Value::Sequence(s)) => {
            let mut needs = Vec::new();
            for n in s {
                match n {
                    Value::Mapping(m) => {
                        let job = m.get("job").and_then(scalar).ok_or_else(|| {
                            e(cx, "`needs` entries are job names or `{job: name}`".into())
                        })?;
                        let artifacts = m.get("artifacts").and_then(Value::as_bool).unwrap_or(true);
                        let optional = m.get("optional").and_then(Value::as_bool).unwrap_or(false);
                        // `needs:parallel:matrix` names some instances of a matrix job, by the
                        // same names the matrix gives them.
                        let jobs = match m.get("parallel") {
                            None => vec![job],
                            Some(p @ Value::Mapping(pm)) if pm.contains_key("matrix") => {
                                parallel_instances(&job, p)
                                    .map_err(|m| e(cx, format!("needs:parallel: {m}")))?
                                    .into_iter()
                                    .map(|(name, _)| name)
                                    .collect()
                            }
                            Some(_) => {
                                return Err(e(cx, "`needs:parallel` takes a `matrix`".into()));
                            }
                        };
                        needs.extend(jobs.into_iter().map(|job| Need {
                            job,
                            artifacts,
                            optional,
                        }));
                    }
                    other => needs.push(Need {
                        job: scalar(other).ok_or_else(|| {
                            e(cx, "`needs` entries are job names or `{job: name}`".into())
                        })?,
                        artifacts: true,
                        optional: false,
                    }),
                }
            }
            Some(needs)
        }
        Some(_) => return Err(e(cx, "`needs` must be a list".into())),
    };
    let dependencies = map
        .get("dependencies")
        .map(|v| names(v).ok_or_else(|| e(cx, "`dependencies` must be a list of job names".into())))
        .transpose()?;
    let artifacts = match map.get("artifacts") {
        None => None,
        Some(Value::Mapping(m)) => {
            for key in m
                .keys()
                .filter_map(Value::as_str)
                .filter(|k| !["paths", "when", "expire_in", "name", "reports"].contains(k))
            {
                cx.unsupported(&format!("artifacts:{key}"), name);
            }
            let paths = match m.get("paths") {
                Some(v) => names(v)
                    .ok_or_else(|| e(cx, "`artifacts:paths` must be a list of paths".into()))?,
                None => Vec::new(),
            };
            let when = match m.get("when").and_then(Value::as_str) {
                None => When::OnSuccess,
                Some(w) => When::parse(w)
                    .filter(|w| matches!(w, When::OnSuccess | When::OnFailure | When::Always))
                    .ok_or_else(|| e(cx, format!("`artifacts:when` cannot be `{w}`")))?,
            };
            let mut dotenv = Vec::new();
            match m.get("reports") {
                None => {}
                Some(Value::Mapping(r)) => {
                    for (k, v) in r {
                        match k.as_str().unwrap_or_default() {
                            "dotenv" => {
                                dotenv = names(v).ok_or_else(|| {
                                    e(cx, "`artifacts:reports:dotenv` must be a path or a list of paths".into())
                                })?;
                            }
                            other => cx.unsupported(&format!("artifacts:reports:{other}"), name),
                        }
                    }
                }
                Some(_) => return Err(e(cx, "`artifacts:reports` must be a mapping".into())),
            }
            Some(Artifacts {
                paths,
                when,
                dotenv,
            })
        }
        Some(_) => return Err(e(cx, "`artifacts` must be a mapping".into())),
    };
    let allow_failure = match map.get("allow_failure") {
        None => None,
        Some(Value::Bool(b)) => Some(if *b {
            AllowFailure::Yes
        } else {
            AllowFailure::No
        }),
        Some(Value::Mapping(m)) => {
            let codes = match m.get("exit_codes") {
                Some(Value::Sequence(s)) => s
                    .iter()
                    .map(|c| c.as_i64().and_then(|c| i32::try_from(c).ok()))
                    .collect(),
                Some(c) => c
                    .as_i64()
                    .and_then(|c| i32::try_from(c).ok())
                    .map(|c| vec![c]),
                None => None,
            };
            Some(AllowFailure::ExitCodes(codes.ok_or_else(|| {
                e(cx, "`allow_failure:exit_codes` must be exit codes".into())
            })?))
        }
        Some(_) => {
            return Err(e(
                cx,
                "`allow_failure` must be true, false or `{exit_codes: [...]}`".into(),
            ));
        }
    };
    let when = match map.get("when") {
        None => When::OnSuccess,
        Some(v) => v
            .as_str()
            .and_then(When::parse)
            .filter(|w| *w != When::Never)
            .ok_or_else(|| e(cx, format!("unknown `when` value {v:?}")))?,
    };
    let start_in = map
        .get("start_in")
        .map(|v| parse_start_in(v).map_err(|m| e(cx, m)))
        .transpose()?;
    // GitLab's `Entry::Job` validations: `start_in` is required with `when: delayed` and only
    // allowed with it (a rule may supply it instead when the rule says `delayed`).
    let rules_delay = map.get("rules").is_some();
    if when == When::Delayed && start_in.is_none() && !rules_delay {
        return Err(e(cx, "`when: delayed` needs `start_in`".into()));
    }
    if when != When::Delayed && start_in.is_some() && !rules_delay {
        return Err(e(
            cx,
            "`start_in` is only allowed with `when: delayed`".into(),
        ));
    }
    let inherit_variables = match map.get("inherit").and_then(|i| i.get("variables")) {
        None => crate::model::Inherit::All,
        Some(v) => parse_inherit(v).ok_or_else(|| {
            e(
                cx,
                "`inherit:variables` must be true, false or a list of variable names".into(),
            )
        })?,
    };
    Ok(Job {
        name: name.to_owned(),
        stage,
        image,
        before_script,
        script: script_lines,
        after_script,
        variables,
        only,
        except,
        rules,
        environment,
        needs,
        dependencies,
        artifacts,
        allow_failure,
        when,
        start_in,
        inherit_variables,
        cache: match map.get("cache") {
            None => Vec::new(),
            Some(v) => parse_cache(v, cx).map_err(|m| e(cx, format!("cache: {m}")))?,
        },
        retry: map
            .get("retry")
            .map(|v| parse_retry(v).map_err(|m| e(cx, format!("retry: {m}"))))
            .transpose()?,
        timeout: map
            .get("timeout")
            .map(|v| parse_timeout(v).map_err(|m| e(cx, m)))
            .transpose()?,
        parallel_of: None,
        line,
    })
}

/// `cache:` — one mapping or a list of them (GitLab allows up to 4).
fn parse_cache(v: &Value, cx: &mut Ctx<'_>) -> std::result::Result<Vec<Cache>, String> {
    let entries: Vec<&Value> = match v {
        Value::Sequence(s) => s.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    if entries.len() > 4 {
        return Err("at most 4 caches per job".into());
    }
    let mut out = Vec::new();
    for entry in entries {
        let Value::Mapping(m) = entry else {
            return Err("each cache is a mapping (`key`, `paths`, `policy`, ...)".into());
        };
        let mut cache = Cache::default();
        for (k, val) in m {
            match k.as_str().unwrap_or_default() {
                "key" => {
                    cache.key = match val {
                        Value::Mapping(km) => {
                            if let Some(bad) = km
                                .keys()
                                .find(|k| !matches!(k.as_str(), Some("files" | "prefix")))
                            {
                                return Err(format!(
                                    "unknown `key` keyword {}: it takes `files` and `prefix`",
                                    scalar(bad).unwrap_or_default()
                                ));
                            }
                            let files = km
                                .get("files")
                                .and_then(names)
                                .filter(|f| (1..=2).contains(&f.len()))
                                .ok_or("`key:files` must list one or two files")?;
                            CacheKey::Files {
                                files,
                                prefix: km.get("prefix").and_then(scalar),
                            }
                        }
                        other => CacheKey::Text(scalar(other).ok_or("`key` must be a string")?),
                    }
                }
                "paths" => cache.paths = names(val).ok_or("`paths` must be a list of paths")?,
                "policy" => {
                    cache.policy = match val.as_str() {
                        Some("pull") => CachePolicy::Pull,
                        Some("push") => CachePolicy::Push,
                        Some("pull-push") => CachePolicy::PullPush,
                        _ => return Err("`policy` is `pull`, `push` or `pull-push`".into()),
                    }
                }
                "when" => {
                    cache.when = val
                        .as_str()
                        .and_then(When::parse)
                        .filter(|w| matches!(w, When::OnSuccess | When::OnFailure | When::Always))
                        .ok_or("`when` is `on_success`, `on_failure` or `always`")?;
                }
                "untracked" => {
                    cache.untracked = val.as_bool().ok_or("`untracked` is true or false")?;
                    if cache.untracked {
                        cx.unsupported("cache:untracked", "(cache)");
                    }
                }
                "fallback_keys" => {
                    cache.fallback_keys =
                        names(val).ok_or("`fallback_keys` must be a list of keys")?;
                }
                "unprotect" => {}
                other => return Err(format!("unknown keyword `{other}`")),
            }
        }
        out.push(cache);
    }
    Ok(out)
}

/// `retry: N` or `retry: {max, when, exit_codes}` (`Entry::Retry`: max 0 to 2).
fn parse_retry(v: &Value) -> std::result::Result<crate::model::Retry, String> {
    let max_of = |v: &Value| {
        v.as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .filter(|n| *n <= 2)
            .ok_or_else(|| "`max` must be 0, 1 or 2".to_owned())
    };
    match v {
        Value::Number(_) => Ok(crate::model::Retry {
            max: max_of(v)?,
            when: Vec::new(),
            exit_codes: Vec::new(),
        }),
        Value::Mapping(m) => {
            if let Some(k) = m
                .keys()
                .find(|k| !matches!(k.as_str(), Some("max" | "when" | "exit_codes")))
            {
                return Err(format!(
                    "unknown key {}: it takes `max`, `when` and `exit_codes`",
                    scalar(k).unwrap_or_default()
                ));
            }
            const REASONS: [&str; 13] = [
                "always",
                "unknown_failure",
                "script_failure",
                "api_failure",
                "stuck_or_timeout_failure",
                "runner_system_failure",
                "runner_unsupported",
                "stale_schedule",
                "job_execution_timeout",
                "archived_failure",
                "unmet_prerequisites",
                "scheduler_failure",
                "data_integrity_failure",
            ];
            let when = match m.get("when") {
                None => Vec::new(),
                Some(w) => names(w).ok_or("`when` must be a failure reason or a list of them")?,
            };
            if let Some(bad) = when.iter().find(|w| !REASONS.contains(&w.as_str())) {
                return Err(format!("unknown failure reason `{bad}` in `when`"));
            }
            let exit_codes = match m.get("exit_codes") {
                None => Vec::new(),
                Some(Value::Sequence(s)) => s
                    .iter()
                    .map(|c| c.as_i64().and_then(|c| i32::try_from(c).ok()))
                    .collect::<Option<_>>()
                    .ok_or("`exit_codes` must be exit codes")?,
                Some(c) => vec![
                    c.as_i64()
                        .and_then(|c| i32::try_from(c).ok())
                        .ok_or("`exit_codes` must be exit codes")?,
                ],
            };
            Ok(crate::model::Retry {
                max: m.get("max").map_or(Ok(0), max_of)?,
                when,
                exit_codes,
            })
        }
        _ => Err("must be 0, 1, 2 or `{max, when, exit_codes}`".into()),
    }
}

/// `timeout:` — a duration of at least 10 minutes in GitLab; locally any positive one.
fn parse_timeout(v: &Value) -> std::result::Result<crate::model::Timeout, String> {
    let text = scalar(v).ok_or("`timeout` must be a duration")?;
    match duration_secs(&text) {
        Some(secs) if secs > 0 => Ok(crate::model::Timeout { text, secs }),
        _ => Err(format!(
            "`timeout` {text:?} is not a duration (like `1h 30m`)"
        )),
    }
}

/// GitLab's limit on the jobs one `parallel:` makes (`Entry::Product::Parallel`).
const MAX_PARALLEL: usize = 200;

/// The instances of a `parallel:` job, each with its name and matrix variables, in GitLab's
/// order and naming (`Normalizer::NumberStrategy`: `job 1/3`; `MatrixStrategy`:
/// `job: [a, b]`, one entry after the other, each the product of its value lists with the
/// first variable varying slowest).
fn parallel_instances(
    name: &str,
    v: &Value,
) -> std::result::Result<Vec<(String, Variables)>, String> {
    let matrix = match v {
        Value::Number(n) => {
            let total = n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=MAX_PARALLEL).contains(n))
                .ok_or_else(|| format!("must be a number from 1 to {MAX_PARALLEL}"))?;
            return Ok((1..=total)
                .map(|i| (format!("{name} {i}/{total}"), Variables::new()))
                .collect());
        }
        Value::Mapping(m) => match m.get("matrix") {
            Some(Value::Sequence(entries)) if !entries.is_empty() => entries,
            _ => return Err("`matrix` must be a non-empty list of variable mappings".into()),
        },
        _ => return Err("must be a number or `{matrix: [...]}`".into()),
    };
    let mut out = Vec::new();
    for entry in matrix {
        let Value::Mapping(vars) = entry else {
            return Err("each `matrix` entry is a mapping of variables to values".into());
        };
        if vars.is_empty() {
            return Err("a `matrix` entry has no variables".into());
        }
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, values) in vars {
            let key = scalar(k).ok_or("matrix variable names are strings")?;
            let values = names(values)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{key}: values are a string or a list of strings"))?;
            let mut next = Vec::with_capacity(combos.len() * values.len());
            for c in &combos {
                for v in &values {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone()));
                    next.push(c);
                }
            }
            combos = next;
            if combos.len() > MAX_PARALLEL {
                return Err(format!("the matrix makes more than {MAX_PARALLEL} jobs"));
            }
        }
        for combo in combos {
            let label: Vec<&str> = combo.iter().map(|(_, v)| v.as_str()).collect();
            let mut vars = Variables::new();
            for (k, v) in &combo {
                vars.set(k.clone(), v.clone());
            }
            out.push((format!("{name}: [{}]", label.join(", ")), vars));
        }
        if out.len() > MAX_PARALLEL {
            return Err(format!("the matrix makes more than {MAX_PARALLEL} jobs"));
        }
    }
    Ok(out)
}

/// `needs: [x]` and `dependencies: [x]` naming a `parallel:` job mean all its instances.
fn expand_parallel_references(jobs: &mut [Job]) {
    let mut instances: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for j in jobs.iter() {
        if let Some(base) = &j.parallel_of {
            instances
                .entry(base.clone())
                .or_default()
                .push(j.name.clone());
        }
    }
    if instances.is_empty() {
        return;
    }
    for job in jobs.iter_mut() {
        if let Some(needs) = &mut job.needs {
            *needs = needs
                .drain(..)
                .flat_map(|n| match instances.get(&n.job) {
                    Some(all) => all
                        .iter()
                        .map(|i| Need {
                            job: i.clone(),
                            ..n.clone()
                        })
                        .collect(),
                    None => vec![n],
                })
                .collect();
        }
        if let Some(deps) = &mut job.dependencies {
            *deps = deps
                .drain(..)
                .flat_map(|d| instances.get(&d).cloned().unwrap_or_else(|| vec![d]))
                .collect();
        }
    }
}

/// `inherit:default` of a job; unknown `inherit:` keys are errors as in GitLab.
fn inherit_default(map: &Mapping, name: &str, cx: &Ctx<'_>) -> Result<crate::model::Inherit> {
    let Some(inherit) = map.get("inherit") else {
        return Ok(crate::model::Inherit::All);
    };
    let e = |m: &str| cx.err(name, format!("job {name:?}: {m}"));
    let Value::Mapping(m) = inherit else {
        return Err(e(
            "`inherit` must be a mapping with `default` and/or `variables`",
        ));
    };
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), Some("default" | "variables")))
    {
        return Err(e(&format!(
            "unknown `inherit` key {}: it takes `default` and `variables`",
            scalar(k).unwrap_or_default()
        )));
    }
    match m.get("default") {
        None => Ok(crate::model::Inherit::All),
        Some(v) => parse_inherit(v).ok_or_else(|| {
            e("`inherit:default` must be true, false or a list of `default:` keywords")
        }),
    }
}

fn parse_inherit(v: &Value) -> Option<crate::model::Inherit> {
    use crate::model::Inherit;
    match v {
        Value::Bool(true) => Some(Inherit::All),
        Value::Bool(false) => Some(Inherit::Nothing),
        Value::Sequence(_) => names(v).map(Inherit::Only),
        _ => None,
    }
}

/// A `start_in` duration as GitLab takes it (`ChronicDuration`: `30 minutes`, `1 day`,
/// `2h 30m`, a bare number of seconds), at most one week. Kept as written for the log.
fn parse_start_in(v: &Value) -> std::result::Result<String, String> {
    let text = scalar(v).ok_or_else(|| "`start_in` must be a duration".to_owned())?;
    let secs = duration_secs(&text)
        .ok_or_else(|| format!("`start_in` {text:?} is not a duration (like `30 minutes`)"))?;
    if secs > 7 * 24 * 3600 {
        return Err(format!("`start_in` {text:?} is more than one week"));
    }
    Ok(text)
}

/// Seconds of a human duration: numbers followed by units (`s`, `sec`, `seconds`, `m`,
/// `min`, `minutes`, `h`, `hours`, `d`, `days`, `w`, `weeks`), summed; a bare number is seconds.
pub(crate) fn duration_secs(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = rest[unit_end..].trim_start_matches([' ', ',']);
        rest = rest.strip_prefix("and ").unwrap_or(rest).trim_start();
        let factor = match unit.to_ascii_lowercase().as_str() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "week" | "weeks" => 604_800.0,
            _ => return None,
        };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a non-negative duration in seconds, bounded by the one-week check"
        )]
        let secs = (number * factor).round() as u64;
        total = total.checked_add(secs)?;
    }
    Some(total)
}

fn parse_rules(v: &Value, owner: &str, cx: &mut Ctx<'_>) -> Result<Vec<Rule>> {
    let e = |cx: &Ctx<'_>, m: String| cx.err(owner, format!("{owner}: rules: {m}"));
    let Value::Sequence(list) = v else {
        return Err(e(cx, "`rules` must be a list".into()));
    };
    // `!reference [.x, rules]` inside `rules:` leaves a nested list; GitLab flattens it (its
    // documented `rules: [!reference [.default_rules, rules], ...]` example).
    let mut flat = Vec::new();
    flatten(list, &mut flat, 0);
    let mut rules = Vec::new();
    for item in flat {
        let Value::Mapping(m) = item else {
            return Err(e(cx, "each rule is a mapping (`- if: ...`)".into()));
        };
        let mut rule = Rule::default();
        for (k, val) in m {
            match k.as_str().unwrap_or_default() {
                "if" => {
                    let text = scalar(val).ok_or_else(|| e(cx, "`if` must be a string".into()))?;
                    let expr = Expr::parse(&text).map_err(|err| e(cx, err.to_string()))?;
                    rule.condition = Some((text, expr));
                }
                "changes" => {
                    let paths = match val {
                        Value::Mapping(cm) => {
                            if cm.contains_key("compare_to") {
                                cx.unsupported(
                                    "rules:changes:compare_to (use --compare-to)",
                                    owner,
                                );
                            }
                            cm.get("paths").and_then(names)
                        }
                        other => names(other),
                    };
                    rule.changes = Some(paths.ok_or_else(|| {
                        e(cx, "`changes` must be a list of paths or globs".into())
                    })?);
                }
                "exists" => {
                    // A list, or `{paths: [...]}` (the `project:` form needs a GitLab server).
                    let paths = match val {
                        Value::Mapping(em) => em.get("paths").and_then(names),
                        other => names(other),
                    };
                    rule.exists = Some(paths.ok_or_else(|| {
                        e(cx, "`exists` must be a list of paths or globs".into())
                    })?);
                }
                "when" => {
                    rule.when = Some(
                        val.as_str()
                            .and_then(When::parse)
                            .ok_or_else(|| e(cx, format!("unknown `when` {val:?}")))?,
                    )
                }
                "variables" => {
                    rule.variables = parse_variables(val).map_err(|m| e(cx, m.to_string()))?
                }
                "allow_failure" => rule.allow_failure = val.as_bool(),
                "start_in" => rule.start_in = Some(parse_start_in(val).map_err(|m| e(cx, m))?),
                other => cx.unsupported(&format!("rules:{other}"), owner),
            }
        }
        if rule.when == Some(When::Delayed) && rule.start_in.is_none() {
            return Err(e(cx, "a rule with `when: delayed` needs `start_in`".into()));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn flatten<'v>(list: &'v [Value], out: &mut Vec<&'v Value>, depth: usize) {
    for item in list {
        match item {
            Value::Sequence(inner) if depth < 10 => flatten(inner, out, depth + 1),
            other => out.push(other),
        }
    }
}

fn parse_filter(v: &Value, job: &str, key: &str, cx: &mut Ctx<'_>) -> Result<RefFilter> {
    let e = |cx: &Ctx<'_>, m: String| cx.err(job, format!("job {job:?}: {key}: {m}"));
    match v {
        Value::Mapping(m) => {
            let mut f = RefFilter::default();
            for (k, val) in m {
                match k.as_str().unwrap_or_default() {
                    "refs" => {
                        f.refs = names(val).ok_or_else(|| e(cx, "`refs` must be a list".into()))?
                    }
                    "variables" => {
                        for text in names(val).ok_or_else(|| {
                            e(cx, "`variables` must be a list of expressions".into())
                        })? {
                            let expr = Expr::parse(&text).map_err(|err| e(cx, err.to_string()))?;
                            f.variables.push((text, expr));
                        }
                    }
                    other => cx.unsupported(&format!("{key}:{other}"), job),
                }
            }
            Ok(f)
        }
        other => Ok(RefFilter {
            refs: names(other)
                .ok_or_else(|| e(cx, "expected a list of refs or a mapping".into()))?,
            variables: Vec::new(),
        }),
    }
}

/// Why a keyword's value has the wrong shape; the caller places it (file, line, job, key).
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("`image` needs a `name`")]
    ImageName,
    #[error("`image:entrypoint` must be a list")]
    ImageEntrypoint,
    #[error("`image` must be a name or a mapping")]
    ImageForm,
    #[error("`variables` must be a mapping of names to values")]
    VariablesForm,
    #[error("variable names are strings")]
    VariableName,
    #[error("{name}: `value` must be a scalar")]
    VariableValueField { name: String },
    #[error("{name}: value must be a string or number")]
    VariableValue { name: String },
    #[error("script lists nested deeper than 10 levels")]
    ScriptDepth,
    #[error("script lines must be strings")]
    ScriptLine,
}

fn parse_image(v: &Value) -> std::result::Result<Image, Malformed> {
    match v {
        Value::Mapping(m) => Ok(Image {
            name: m.get("name").and_then(scalar).ok_or(Malformed::ImageName)?,
            entrypoint: m
                .get("entrypoint")
                .map(|e| names(e).ok_or(Malformed::ImageEntrypoint))
                .transpose()?,
        }),
        other => Ok(Image {
            name: scalar(other).ok_or(Malformed::ImageForm)?,
            entrypoint: None,
        }),
    }
}

/// Parses a `variables:` mapping (values are scalars or `{value, expand, description}`).
fn parse_variables(v: &Value) -> std::result::Result<Variables, Malformed> {
    let mut vars = Variables::new();
    let map = match v {
        Value::Mapping(m) => m,
        Value::Null => return Ok(vars),
        _ => return Err(Malformed::VariablesForm),
    };
    for (k, val) in map {
        let name = scalar(k).ok_or(Malformed::VariableName)?;
        let var = match val {
            Value::Mapping(m) => {
                let value = m
                    .get("value")
                    .map_or(Some(String::new()), scalar)
                    .ok_or_else(|| Malformed::VariableValueField { name: name.clone() })?;
                let expand = m.get("expand").and_then(Value::as_bool).unwrap_or(true);
                Variable::new(name, value).with_expand(expand)
            }
            Value::Null => Variable::new(name, ""),
            other => Variable::new(
                name.clone(),
                scalar(other).ok_or_else(|| Malformed::VariableValue { name: name.clone() })?,
            ),
        };
        vars.push(var);
    }
    Ok(vars)
}

/// A script: a string or a list of strings, nested lists (from `!reference`) flattened.
fn script(v: &Value) -> std::result::Result<Vec<String>, Malformed> {
    fn walk(v: &Value, out: &mut Vec<String>, depth: usize) -> std::result::Result<(), Malformed> {
        match v {
            Value::Sequence(s) if depth < 10 => s.iter().try_for_each(|x| walk(x, out, depth + 1)),
            Value::Sequence(_) => Err(Malformed::ScriptDepth),
            other => {
                out.push(scalar(other).ok_or(Malformed::ScriptLine)?);
                Ok(())
            }
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out, 0)?;
    Ok(out)
}

/// A list of scalars (a single scalar counts as a one-element list).
fn names(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Sequence(s) => s.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline> {
        Pipeline::parse(text, Path::new(".gitlab-ci.yml"), Path::new("."))
    }

    #[test]
    fn defaults_and_job_overrides() {
        let p = parse(
            "image: alpine:3\nbefore_script: [global-before]\ndefault:\n  after_script: [default-after]\nbuild:\n  stage: build\n  script: echo hi\ntest:\n  image: {name: busybox, entrypoint: ['']}\n  before_script: []\n  script: [a, b]\n",
        )
        .unwrap();
        assert_eq!(p.stages, [".pre", "build", "test", "deploy", ".post"]);
        let build = p.job("build").unwrap();
        assert_eq!(build.image.as_ref().unwrap().name, "alpine:3");
        assert_eq!(build.before_script, ["global-before"]);
        assert_eq!(build.after_script, ["default-after"]);
        assert_eq!(build.script, ["echo hi"]);
        let test = p.job("test").unwrap();
        assert_eq!(test.stage, "test");
        assert_eq!(
            test.image.as_ref().unwrap().entrypoint,
            Some(vec![String::new()])
        );
        assert!(test.before_script.is_empty());
    }

    #[test]
    fn unknown_stage_is_an_error_with_the_line() {
        let err = parse("stages: [build]\n\njob:\n  stage: deploy\n  script: [x]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:3: job \"job\": chosen stage `deploy` does not exist; available stages are build"
        );
    }

    #[test]
    fn unsupported_keywords_give_one_warning() {
        let p = parse("services: [x]\na:\n  script: [x]\n  cache: {}\n  tags: [x]\nb:\n  script: [x]\n  cache: {}\n").unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            p.warnings[0].to_string(),
            "unsupported keywords are ignored: `services` ((global)), `tags` (a)"
        );
    }

    #[test]
    fn variables_forms() {
        let p = parse(
            "variables:\n  N: 3\n  RAW: {value: '$X', expand: false}\n  E:\njob:\n  script: [x]\n",
        )
        .unwrap();
        let v: Vec<_> = p
            .variables
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str(), v.expand))
            .collect();
        assert_eq!(v, [("N", "3", true), ("RAW", "$X", false), ("E", "", true)]);
    }

    #[test]
    fn job_keywords_parse() {
        let p = parse(
            "deploy:\n  stage: deploy\n  script: [d]\n  environment: {name: review/$CI_COMMIT_REF_SLUG, url: 'https://x'}\n  needs: [build, {job: lint, artifacts: false, optional: true}]\n  dependencies: [build]\n  artifacts: {paths: [out/], when: always}\n  allow_failure: {exit_codes: [3, 4]}\n  when: manual\n  only: {refs: [master, /^release-.*$/], variables: ['$DEPLOY == \"1\"']}\nbuild:\n  stage: build\n  script: [b]\n",
        )
        .unwrap();
        let j = p.job("deploy").unwrap();
        assert_eq!(
            j.environment.as_ref().unwrap().name,
            "review/$CI_COMMIT_REF_SLUG"
        );
        assert_eq!(
            j.needs.as_ref().unwrap()[1],
            Need {
                job: "lint".into(),
                artifacts: false,
                optional: true
            }
        );
        assert_eq!(j.artifacts.as_ref().unwrap().when, When::Always);
        let allow = j.allow_failure.as_ref().unwrap();
        assert!(allow.allows(Some(3)) && !allow.allows(Some(1)));
        assert_eq!(j.when, When::Manual);
        assert_eq!(j.only.as_ref().unwrap().refs, ["master", "/^release-.*$/"]);
        assert_eq!(j.only.as_ref().unwrap().variables.len(), 1);
        assert_eq!(j.line, 1);
    }

    #[test]
    fn needs_and_dependencies_must_point_backwards() {
        let err = parse("a:\n  script: [x]\n  needs: [nope]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: job \"a\": undefined need: nope"
        );
        assert!(parse("a:\n  script: [x]\n  needs: [{job: nope, optional: true}]\n").is_ok());
        let later =
            "a:\n  stage: build\n  script: [x]\n  needs: [b]\nb:\n  stage: test\n  script: [x]\n";
        assert!(
            parse(later)
                .unwrap_err()
                .to_string()
                .contains("later stage")
        );
        let same = "a:\n  script: [x]\n  dependencies: [b]\nb:\n  script: [x]\n";
        assert!(
            parse(same)
                .unwrap_err()
                .to_string()
                .contains("earlier stage")
        );
    }

    #[test]
    fn rules_with_only_is_rejected_and_missing_script_too() {
        assert!(parse("j:\n  script: [x]\n  only: [a]\n  rules: [{when: always}]\n").is_err());
        let err = parse("variables: {}\nj:\n  stage: test\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:2: job \"j\": a job needs a `script`"
        );
    }

    #[test]
    fn malformed_values_are_placed_at_their_job_and_key() {
        let err = parse("a:\n  script: [x]\n\nj:\n  script: [x]\n  image: {entrypoint: [sh]}\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:4: job \"j\": `image` needs a `name`"
        );
        assert!(
            matches!(&err, Error::Invalid { key, line: 4, .. } if key == "j"),
            "{err:?}"
        );
        let err = parse("variables:\n  A: [1]\nj:\n  script: [x]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: variables: A: value must be a string or number"
        );
        let err = parse("j:\n  script: [[x, {a: b}]]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: job \"j\": script: script lines must be strings"
        );
    }

    #[test]
    fn a_needs_cycle_is_an_error_naming_the_jobs() {
        let err = parse(
            "a:\n  script: [x]\n  needs: [b]\nb:\n  script: [x]\n  needs: [c]\nc:\n  script: [x]\n  needs: [a]\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: job \"a\": `needs` form a cycle: a -> b -> c -> a"
        );
        let err = parse("a:\n  script: [x]\n  needs: [a]\n").unwrap_err();
        assert!(err.to_string().contains("cycle: a -> a"), "{err}");
    }

    #[test]
    fn delayed_needs_start_in_and_start_in_needs_delayed() {
        let err = parse("j:\n  script: [x]\n  when: delayed\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: job \"j\": `when: delayed` needs `start_in`"
        );
        let err = parse("j:\n  script: [x]\n  start_in: 1 hour\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("only allowed with `when: delayed`")
        );
        let err = parse("j:\n  script: [x]\n  when: delayed\n  start_in: soon\n").unwrap_err();
        assert!(
            err.to_string().contains("\"soon\" is not a duration"),
            "{err}"
        );
        let err = parse("j:\n  script: [x]\n  when: delayed\n  start_in: 8 days\n").unwrap_err();
        assert!(err.to_string().contains("more than one week"), "{err}");
        let err = parse("j:\n  script: [x]\n  rules: [{when: delayed}]\n").unwrap_err();
        assert!(err.to_string().contains("needs `start_in`"), "{err}");
        let p = parse("j:\n  script: [x]\n  when: delayed\n  start_in: 2h 30m\n").unwrap();
        assert_eq!(p.job("j").unwrap().start_in.as_deref(), Some("2h 30m"));
        assert_eq!(duration_secs("2h 30m"), Some(9000));
        assert_eq!(duration_secs("1 day and 10 seconds"), Some(86410));
        assert_eq!(duration_secs("90"), Some(90));
        assert_eq!(duration_secs(""), None);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn inherit_takes_booleans_and_lists_and_rejects_other_keys() {
        let p = parse(
            "variables: {A: a}\ndefault: {image: alpine}\nj:\n  inherit: {default: [before_script], variables: [A]}\n  script: [x]\n",
        )
        .unwrap();
        let j = p.job("j").unwrap();
        assert!(j.image.is_none());
        assert_eq!(
            j.inherit_variables,
            crate::model::Inherit::Only(vec!["A".into()])
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let err = parse("j:\n  inherit: {services: false}\n  script: [x]\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown `inherit` key services"),
            "{err}"
        );
        let err = parse("j:\n  inherit: {variables: maybe}\n  script: [x]\n").unwrap_err();
        assert!(
            err.to_string().contains("`inherit:variables` must be"),
            "{err}"
        );
    }

    #[test]
    fn include_globs_and_rules_read_only_inside_the_project() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        std::fs::create_dir_all(project.join("ci")).unwrap();
        // A sentinel beside the project, reachable only through a planted symlink.
        let sentinel = tmp.path().join("sentinel.yml");
        std::fs::write(&sentinel, "stolen:\n  script: [leak]\n").unwrap();
        let before = std::fs::metadata(&sentinel).unwrap();
        std::os::unix::fs::symlink(&sentinel, project.join("ci/evil.yml")).unwrap();
        std::fs::write(project.join("ci/ok.yml"), "ok:\n  script: [x]\n").unwrap();
        let main = project.join(".gitlab-ci.yml");
        let load = |text: &str| Pipeline::parse(text, &main, &project);

        let err = load("include: ci/evil.yml\nj:\n  script: [x]\n").unwrap_err();
        assert!(matches!(err, Error::ReadFile { .. }), "{err:?}");
        let err = load("include: 'ci/*.yml'\nj:\n  script: [x]\n").unwrap_err();
        assert!(matches!(err, Error::ReadFile { .. }), "{err:?}");
        let err = load("include: ../sentinel.yml\nj:\n  script: [x]\n").unwrap_err();
        assert!(matches!(err, Error::ReadFile { .. }), "{err:?}");
        let after = std::fs::metadata(&sentinel).unwrap();
        assert_eq!(before.modified().unwrap(), after.modified().unwrap());
        assert_eq!(
            std::fs::read_to_string(&sentinel).unwrap(),
            "stolen:\n  script: [leak]\n"
        );

        std::fs::remove_file(project.join("ci/evil.yml")).unwrap();
        let p = load("include: 'ci/*.yml'\nj:\n  script: [x]\n").unwrap();
        assert!(p.job("ok").is_some());
        let err = load("include: 'nope/*.yml'\nj:\n  script: [x]\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("no file in the project matches `nope/*.yml`"),
            "{err}"
        );
        let err = load("include: ci/ok.txt\nj:\n  script: [x]\n").unwrap_err();
        assert!(err.to_string().contains("YAML extension"), "{err}");
        // A false rule means the file is not even read (it does not exist).
        let p = load(
            "include:\n  - local: ci/missing.yml\n    rules: [{if: '$X == \"1\"'}]\nj:\n  script: [x]\n",
        )
        .unwrap();
        assert!(p.job("j").is_some());
        let vars = BTreeMap::from([("X".to_owned(), "1".to_owned())]);
        let err = Pipeline::parse_with(
            "include:\n  - local: ci/missing.yml\n    rules: [{if: '$X == \"1\"'}]\nj:\n  script: [x]\n",
            &main,
            &project,
            &vars,
        )
        .unwrap_err();
        assert!(matches!(err, Error::ReadFile { .. }), "{err:?}");
        let err = load(
            "include:\n  - local: ci/ok.yml\n    rules: [{changes: [a]}]\nj:\n  script: [x]\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown rule keyword `changes`"),
            "{err}"
        );
    }

    #[test]
    fn parallel_bounds_shapes_and_unknown_matrix_needs_are_errors() {
        let err = parse("t:\n  script: [x]\n  parallel: 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: job \"t\": parallel: must be a number from 1 to 200"
        );
        assert!(parse("t:\n  script: [x]\n  parallel: 201\n").is_err());
        let values: Vec<String> = (0..15).map(|i| i.to_string()).collect();
        let big = format!(
            "t:\n  script: [x]\n  parallel:\n    matrix:\n      - A: [{0}]\n        B: [{0}]\n",
            values.join(", ")
        );
        let err = parse(&big).unwrap_err();
        assert!(err.to_string().contains("more than 200 jobs"), "{err}");
        let err = parse("t:\n  script: [x]\n  parallel: {matrix: [[a]]}\n").unwrap_err();
        assert!(err.to_string().contains("each `matrix` entry"), "{err}");
        let err = parse("t:\n  script: [x]\n  parallel: {matrix: [{A: []}]}\n").unwrap_err();
        assert!(err.to_string().contains("A: values are"), "{err}");
        let err = parse(
            "b:\n  stage: build\n  script: [x]\n  parallel: {matrix: [{P: [aws]}]}\n\
             d:\n  script: [x]\n  needs: [{job: b, parallel: {matrix: [{P: gcp}]}}]\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:5: job \"d\": undefined need: b: [gcp]"
        );
        let p = parse(
            "b:\n  stage: build\n  script: [x]\n  parallel: 2\n  variables: {V: job}\n\
             d:\n  script: [x]\n  dependencies: [b]\n",
        )
        .unwrap();
        let names: Vec<_> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["b 1/2", "b 2/2", "d"]);
        assert_eq!(
            p.job("d").unwrap().dependencies.as_deref().unwrap(),
            ["b 1/2", "b 2/2"]
        );
        let b2 = p.job("b 2/2").unwrap();
        assert_eq!(b2.variables.get("CI_NODE_INDEX"), Some("2"));
        assert_eq!(b2.variables.get("V"), Some("job"));
        assert_eq!(b2.parallel_of.as_deref(), Some("b"));
    }

    #[test]
    fn retry_and_timeout_parse_with_gitlab_bounds_and_defaults() {
        let err = parse("j:\n  script: [x]\n  retry: 3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: job \"j\": retry: `max` must be 0, 1 or 2"
        );
        let err = parse("j:\n  script: [x]\n  retry: {max: 1, when: [flaky]}\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown failure reason `flaky`"),
            "{err}"
        );
        let err = parse("j:\n  script: [x]\n  retry: {tries: 1}\n").unwrap_err();
        assert!(err.to_string().contains("unknown key tries"), "{err}");
        let err = parse("j:\n  script: [x]\n  timeout: forever\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("`timeout` \"forever\" is not a duration"),
            "{err}"
        );
        let p = parse(
            "default: {retry: 2, timeout: 1h}\na:\n  script: [x]\nb:\n  script: [x]\n  retry: {max: 1, exit_codes: 137}\n  timeout: 90 minutes\nc:\n  inherit: {default: false}\n  script: [x]\n",
        )
        .unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let a = p.job("a").unwrap();
        assert_eq!(a.retry.as_ref().unwrap().max, 2);
        assert_eq!(a.timeout.as_ref().unwrap().secs, 3600);
        let b = p.job("b").unwrap();
        let retry = b.retry.as_ref().unwrap();
        assert!(retry.applies("script_failure", Some(137)));
        assert!(!retry.applies("script_failure", Some(1)));
        assert_eq!(b.timeout.as_ref().unwrap().secs, 5400);
        let c = p.job("c").unwrap();
        assert!(c.retry.is_none() && c.timeout.is_none());
    }

    #[test]
    fn cache_forms_and_errors() {
        let p = parse(
            "cache: {key: global, paths: [a/]}\nj:\n  script: [x]\nk:\n  cache: [{key: {files: [Cargo.lock]}, policy: pull, when: always}]\n  script: [x]\n",
        )
        .unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(
            p.job("j").unwrap().cache[0].key,
            CacheKey::Text("global".into())
        );
        let k = &p.job("k").unwrap().cache[0];
        assert_eq!(k.policy, CachePolicy::Pull);
        assert_eq!(k.when, When::Always);
        let err = parse("j:\n  script: [x]\n  cache: {policy: sometimes}\n").unwrap_err();
        assert!(err.to_string().contains("`policy` is `pull`"), "{err}");
        let err = parse("j:\n  script: [x]\n  cache: {key: {files: [a, b, c]}}\n").unwrap_err();
        assert!(err.to_string().contains("one or two files"), "{err}");
        let err = parse("j:\n  script: [x]\n  cache: {colour: red}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:1: job \"j\": cache: unknown keyword `colour`"
        );
    }

    #[test]
    fn an_unknown_job_keyword_is_an_error_at_its_job() {
        let err = parse("a:\n  script: [x]\n\nb:\n  scirpt: [x]\n  script: [y]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:4: job \"b\": unknown keyword `scirpt` (GitLab rejects a job with unknown keys)"
        );
        // A GitLab keyword rbuild does not implement is a warning only.
        let p = parse("a:\n  script: [x]\n  interruptible: true\n").unwrap();
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn the_model_does_not_depend_on_loading() {
        // `load` builds the model; the model must not reach back (no module cycle).
        let model = include_str!("model.rs");
        for path in ["crate::load", "crate::yaml", "super::load", "super::yaml"] {
            assert!(!model.contains(path), "model.rs uses {path}");
        }
    }
}
