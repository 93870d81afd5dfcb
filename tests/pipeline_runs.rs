//! `rbuild pipeline run|plan` on small `.gitlab-ci.yml` files run for real with the shell
//! executor: the needs DAG, delayed jobs, include rules fed by `--var`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

/// A git repository on branch `main` with `.gitlab-ci.yml` = `ci` and the given extra files.
fn project(work: &Path, ci: &str, files: &[(&str, &str)]) -> PathBuf {
    let project = work.join("p");
    fs::create_dir_all(&project).unwrap();
    fs::write(project.join(".gitlab-ci.yml"), ci).unwrap();
    for (path, text) in files {
        let path = project.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    git_commit_all(&project, "main", "x");
    project
}

fn pipeline(work: &Path, project: &Path, args: &[&str]) -> Output {
    rbuild_pipeline(work, project, args)
}

#[test]
fn pipeline_needs_start_a_job_before_its_stage_predecessors_end() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // `slow` (stage build) can only finish once `early` (stage test, needs `fast`) has run:
    // with stage-by-stage scheduling it times out and fails. No timing is asserted: the
    // marker file is the proof of order.
    let ci = "stages: [build, test]\n\
        slow:\n  stage: build\n  script:\n    - for i in $(seq 300); do [ -f early.done ] && exit 0; sleep 0.1; done; exit 1\n\
        fast:\n  stage: build\n  script: [echo fast]\n\
        early:\n  stage: test\n  needs: [fast]\n  script: [touch early.done]\n\
        staged:\n  stage: test\n  script: ['test -f early.done']\n";
    let project = project(work.path(), ci, &[]);
    let out = pipeline(
        work.path(),
        &project,
        &["run", "--executor", "shell", "--jobs", "2"],
    );
    let text = ok(&out);
    for job in ["slow", "fast", "early", "staged"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{job} ")) && l.contains("passed")),
            "{job} did not pass:\n{text}"
        );
    }
}

#[test]
fn pipeline_needs_cycle_is_a_plan_error_before_any_job_runs() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "first:\n  script: [touch ran]\n\
        a:\n  needs: [b]\n  script: [x]\n\
        b:\n  needs: [a]\n  script: [x]\n";
    let project = project(work.path(), ci, &[]);
    let out = pipeline(work.path(), &project, &["run", "--executor", "shell"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(".gitlab-ci.yml:3: job \"a\": `needs` form a cycle: a -> b -> a"),
        "{err}"
    );
    assert!(!project.join("ran").exists(), "a job ran before the error");
}

#[test]
fn pipeline_delayed_jobs_run_without_waiting_and_say_so() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "later:\n  when: delayed\n  start_in: 1 week\n  script: [echo ran-delayed]\n";
    let project = project(work.path(), ci, &[]);
    let plan = ok(&pipeline(work.path(), &project, &["plan"]));
    assert!(plan.contains("later [delayed, start_in 1 week]"), "{plan}");
    let text = ok(&pipeline(
        work.path(),
        &project,
        &["run", "--executor", "shell"],
    ));
    assert!(
        text.contains("[later] delayed job (start_in 1 week): started without waiting"),
        "{text}"
    );
    assert!(text.contains("[later] ran-delayed"), "{text}");
}

#[test]
fn pipeline_include_rules_see_command_line_variables() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "include:\n  - local: ci/extra.yml\n    rules: [{if: '$EXTRA == \"yes\"'}]\n\
        build:\n  script: [echo build]\n";
    let project = project(
        work.path(),
        ci,
        &[("ci/extra.yml", "extra:\n  script: [echo extra]\n")],
    );
    let without = ok(&pipeline(work.path(), &project, &["plan"]));
    assert!(!without.contains("extra"), "{without}");
    let with = ok(&pipeline(
        work.path(),
        &project,
        &["plan", "--var", "EXTRA=yes"],
    ));
    assert!(with.contains("  extra: "), "{with}");
}

#[test]
fn pipeline_matrix_jobs_run_with_their_names_and_variables() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "stages: [build, test]\n\
        build:\n  stage: build\n  parallel:\n    matrix:\n      - OS: [linux, bsd]\n        ARCH: amd64\n\
        \x20 script: ['echo \"os=$OS arch=$ARCH node=$CI_NODE_INDEX/$CI_NODE_TOTAL\"']\n\
        linux only:\n  stage: test\n  needs:\n    - job: build\n      parallel:\n        matrix:\n          - OS: linux\n            ARCH: amd64\n\
        \x20 script: [echo linux-only]\n";
    let project = project(work.path(), ci, &[]);
    let text = ok(&pipeline(
        work.path(),
        &project,
        &["run", "--executor", "shell"],
    ));
    assert!(
        text.contains("[build: [linux, amd64]] os=linux arch=amd64 node=1/2"),
        "{text}"
    );
    assert!(
        text.contains("[build: [bsd, amd64]] os=bsd arch=amd64 node=2/2"),
        "{text}"
    );
    assert!(text.contains("[linux only] linux-only"), "{text}");
}

#[test]
fn pipeline_cache_is_reused_across_runs_under_the_root() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "deps:\n  cache:\n    key: {files: [deps.lock]}\n    paths: [vendor/]\n\
        \x20 script:\n    - 'if [ -f vendor/v ]; then echo \"cached $(cat vendor/v)\"; else mkdir -p vendor; cp deps.lock vendor/v; echo fetched; fi'\n";
    let project = project(work.path(), ci, &[("deps.lock", "one")]);
    let first = ok(&pipeline(
        work.path(),
        &project,
        &["run", "--executor", "shell"],
    ));
    assert!(first.contains("[deps] fetched"), "{first}");
    // Jobs run in the checkout here: remove what the first run left so only the cache can
    // bring it back.
    fs::remove_dir_all(project.join("vendor")).unwrap();
    let second = ok(&pipeline(
        work.path(),
        &project,
        &["run", "--executor", "shell"],
    ));
    assert!(second.contains("[deps] cached one"), "{second}");
    assert!(work.path().join("root/pipeline-cache").is_dir());
    fs::remove_dir_all(project.join("vendor")).unwrap();
    fs::write(project.join("deps.lock"), "two").unwrap();
    let third = ok(&pipeline(
        work.path(),
        &project,
        &["run", "--executor", "shell"],
    ));
    assert!(
        third.contains("[deps] fetched"),
        "a new key:files content reused: {third}"
    );
}

#[test]
fn pipeline_rules_changes_compare_two_commits() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "docs:\n  script: [echo docs]\n  rules: [{changes: ['docs/**/*.md']}]\n\
        code:\n  script: [echo code]\n  rules: [{changes: ['src/*.rs']}]\n";
    let project = project(work.path(), ci, &[("src/main.rs", "fn main() {}\n")]);
    fs::create_dir_all(project.join("docs/guide")).unwrap();
    fs::write(project.join("docs/guide/intro.md"), "# intro\n").unwrap();
    sh(Command::new("git")
        .arg("-C")
        .arg(&project)
        .args(["-c", "user.name=CI", "-c", "user.email=ci@example.com"])
        .args(["add", "-A"]));
    sh(Command::new("git")
        .arg("-C")
        .arg(&project)
        .args(["-c", "user.name=CI", "-c", "user.email=ci@example.com"])
        .args(["commit", "-q", "-m", "docs"]));
    let plan = |compare: &str| {
        ok(&pipeline(
            work.path(),
            &project,
            &["plan", "--compare-to", compare],
        ))
    };
    let last = plan("HEAD~1");
    assert!(
        last.contains("  docs: rules: rule 1 `changes: docs/**/*.md` matched"),
        "{last}"
    );
    assert!(
        last.contains("code (test): rules: no rule matched"),
        "{last}"
    );
    let none = plan("HEAD");
    assert!(
        none.contains("docs (test): rules: no rule matched"),
        "{none}"
    );
    let bad = pipeline(
        work.path(),
        &project,
        &["plan", "--compare-to", "no-such-ref"],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("no-such-ref"), "{}", stderr(&bad));
}

#[test]
fn pipeline_summary_as_json_lists_every_job() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "ok:\n  script: [echo fine]\n\
        flaky:\n  script: [exit 3]\n  allow_failure: {exit_codes: [3]}\n\
        later:\n  stage: deploy\n  script: [echo later]\n";
    let project = project(work.path(), ci, &[]);
    let out = pipeline(
        work.path(),
        &project,
        &["run", "--executor", "shell", "--format", "json"],
    );
    let text = ok(&out);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("stdout is one JSON document");
    assert_eq!(doc["status"], "passed");
    let jobs = doc["jobs"].as_array().unwrap();
    let names: Vec<_> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ok", "flaky", "later"]);
    assert_eq!(jobs[1]["status"], "failed (allowed)");
    assert_eq!(jobs[1]["exit_code"], 3);
    assert_eq!(jobs[1]["allow_failure"], true);
    assert_eq!(jobs[0]["allow_failure"], false);
    // The log went to stderr, and to one file per job under the root.
    assert!(stderr(&out).contains("[ok] fine"), "{}", stderr(&out));
    let logs = work.path().join("root/pipeline-logs");
    let run_dir = fs::read_dir(&logs).unwrap().next().unwrap().unwrap().path();
    let flaky = fs::read_to_string(run_dir.join("flaky.log")).unwrap();
    assert!(flaky.contains("[flaky] $ exit 3"), "{flaky}");
    assert!(flaky.contains("[flaky] job failed (allowed)"), "{flaky}");
    assert!(!flaky.contains("fine"), "{flaky}");
}

#[test]
fn pipeline_interrupt_stops_running_jobs() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ci = "slow:\n  script: ['sleep 60 & echo $! > bg.pid; touch started; sleep 60']\n";
    let project = project(work.path(), ci, &[]);
    let child = Command::new(bin())
        .arg("--root")
        .arg(work.path().join("root"))
        .args(["pipeline", "run", "--executor", "shell", "--project"])
        .arg(&project)
        .env("HOME", work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = project.join("started");
    for _ in 0..300 {
        if started.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(started.exists(), "the job never started");
    sh(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let pid = fs::read_to_string(project.join("bg.pid")).unwrap();
    let alive = || {
        let stat = fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        stat.is_ok_and(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
    };
    // SIGKILL is delivered when the run exits, but a loaded machine may take a moment to
    // schedule the dying process: allow it a few seconds (the sleep would last a minute).
    for _ in 0..100 {
        if !alive() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(), "a job's process outlived the interrupted run");
}
