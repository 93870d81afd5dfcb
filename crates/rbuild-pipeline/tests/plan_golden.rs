//! Golden tests for plan selection and variable expansion: one folder per case under
//! `testdata/plan/<case>/` with `pipeline.yml` and `expected.txt`.
//!
//! `expected.txt` is a list of sections; each header says what to plan for (the pipeline is
//! loaded per section, since `include:rules` depend on the ref; a load or plan error is the
//! section's whole output):
//! `=== branch NAME | --manual | --job JOB NAME | KEY=VALUE ...` (`tag NAME` for tags). The body
//! is the rendered plan, then each planned job's image and user-visible environment.
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p rbuild-pipeline`
//! and review the diff.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fmt::Write as _;
use std::path::Path;

use rbuild_pipeline::{
    GitInfo, GitRef, Pipeline, PipelineContext, PlanOptions, Variable, Variables, plan,
};

fn context(git_ref: GitRef) -> PipelineContext {
    let git = GitInfo {
        sha: "3c60211292d79a7ee9cd1f8dcea732498630b2ce".into(),
        git_ref,
        project_name: "gotthard".into(),
        project_path: Some("adtech/gotthard".into()),
        default_branch: "master".into(),
    };
    let mut cx = PipelineContext::new(git, "/builds/adtech/gotthard");
    cx.pipeline_id = 7;
    cx.job_token = "job-token-0123456789".into();
    cx
}

fn render_section(file: &Path, header: &str) -> String {
    let mut parts = header.split(" | ");
    let (kind, name) = parts
        .next()
        .and_then(|r| r.split_once(' '))
        .expect("header starts with `branch NAME` or `tag NAME`");
    let git_ref = match kind {
        "branch" => GitRef::Branch(name.into()),
        "tag" => GitRef::Tag(name.into()),
        other => panic!("unknown ref kind {other}"),
    };
    let mut opts = PlanOptions::default();
    let mut secrets = Variables::new();
    for p in parts {
        if p == "--manual" {
            opts = opts.manual(true);
        } else if let Some(job) = p.strip_prefix("--job ") {
            opts = opts.jobs([job]);
        } else if let Some((k, v)) = p.split_once('=') {
            secrets.push(Variable::secret(k, v));
        } else {
            panic!("bad header part {p:?}");
        }
    }
    // Loaded per section: `include:rules` depend on the ref and the pipeline variables.
    let cx = context(git_ref);
    let mut include_vars = cx.variables();
    include_vars.extend(&secrets);
    let include_vars = include_vars.expand_all().expect("variables");
    let project = file.parent().expect("the case folder");
    let pipeline = match Pipeline::load(file, project, &include_vars) {
        Ok(p) => p,
        // Paths relative to the case folder, so the expected text is the same on any machine.
        Err(e) => {
            let prefix = format!("{}/", project.display());
            return format!("error: {}\n", e.to_string().replace(&prefix, ""));
        }
    };
    let mut out = String::new();
    for w in &pipeline.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let plan = match plan(&pipeline, &cx, &opts.variables(secrets)) {
        Ok(p) => p,
        Err(e) => return format!("error: {e}\n"),
    };
    out.push_str(&plan.to_string());
    for job in plan.jobs() {
        let _ = writeln!(out, "  [{}]", job.name);
        if let Some(image) = &job.image {
            let _ = writeln!(out, "    image: {image}");
        }
        if let Some(url) = job.environment.as_ref().and_then(|e| e.url.as_ref()) {
            let _ = writeln!(out, "    url: {url}");
        }
        for (key, lines) in [
            ("before_script", &job.before_script),
            ("script", &job.script),
            ("after_script", &job.after_script),
        ] {
            if !lines.is_empty() {
                let _ = writeln!(out, "    {key}: {}", lines.join("; "));
            }
        }
        if let Some(needs) = &job.needs {
            let _ = writeln!(out, "    needs: [{}]", needs.join(", "));
        }
        if !job.artifacts_from.is_empty() {
            let _ = writeln!(out, "    artifacts from: {}", job.artifacts_from.join(", "));
        }
        for (k, v) in &job.env {
            // Predefined variables are covered by their own tests; show what the file defines
            // plus the environment ones.
            if !k.starts_with("CI")
                || k.starts_with("CI_ENVIRONMENT")
                || k.starts_with("CI_NODE")
                || k == "CI_REGISTRY"
            {
                let _ = writeln!(out, "    {k}={v}");
            }
        }
    }
    out
}

#[test]
fn plan_golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/plan");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "expected the golden case folders in {}",
        root.display()
    );
    let mut failures = Vec::new();
    for case in cases {
        let file = case.join("pipeline.yml");
        let expected_path = case.join("expected.txt");
        let expected = std::fs::read_to_string(&expected_path).unwrap();
        let mut actual = String::new();
        for header in expected.lines().filter_map(|l| l.strip_prefix("=== ")) {
            let _ = writeln!(actual, "=== {header}");
            actual.push_str(&render_section(&file, header));
        }
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
        } else if actual != expected {
            failures.push(format!("--- {}\n{actual}", expected_path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to regenerate):\n{}",
        failures.join("\n")
    );
}
