//! End-to-end runs of small pipelines with the host shell executor: artifacts between jobs,
//! a failing job, `allow_failure`, `when`, `after_script`, masking, concurrency and shims on
//! `PATH`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbuild_pipeline::{
    Event, GitInfo, GitRef, JobStatus, Pipeline, PipelineContext, Plan, PlanOptions, RunOptions,
    RunReport, Runner, ShellRunner, Stream, Variable, Variables, plan,
};

const SECRET: &str = "supersecret-value-123";

fn context(project: &Path) -> PipelineContext {
    let git = GitInfo {
        sha: "3c60211292d79a7ee9cd1f8dcea732498630b2ce".into(),
        git_ref: GitRef::Branch("master".into()),
        project_name: "demo".into(),
        project_path: None,
        default_branch: "master".into(),
    };
    let mut cx = PipelineContext::new(git, project);
    cx.pipeline_id = 99;
    cx
}

fn plan_for(project: &Path, yaml: &str) -> Plan {
    let path = project.join(".gitlab-ci.yml");
    std::fs::write(&path, yaml).unwrap();
    let pipeline = Pipeline::from_file(&path, project).unwrap();
    let mut secrets = Variables::new();
    secrets.push(Variable::secret("SECRET_TOKEN", SECRET));
    plan(
        &pipeline,
        &context(project),
        &PlanOptions::default().variables(secrets),
    )
    .unwrap()
}

async fn run(plan: &Plan, opts: RunOptions) -> (RunReport, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let report = Runner::new(ShellRunner::new(), opts)
        .run(plan, move |e: &Event| sink.lock().unwrap().push(e.clone()))
        .await
        .unwrap();
    let events = events.lock().unwrap().clone();
    (report, events)
}

fn lines_of(events: &[Event], job: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Output { job: j, line, .. } if j == job => Some(line.clone()),
            _ => None,
        })
        .collect()
}

const PIPELINE: &str = r#"
stages: [build, test, deploy, cleanup]
before_script:
  - echo "before $CI_JOB_NAME in $CI_JOB_STAGE"
build:
  stage: build
  script:
    - mkdir -p out
    - echo "built $CI_COMMIT_SHORT_SHA" > out/app.txt
    - echo "token is $SECRET_TOKEN"
  artifacts:
    paths: [out/, missing.txt]
stray:
  stage: build
  script: [echo stray > stray.txt]
flaky lint:
  stage: test
  allow_failure: true
  script: [exit 3]
check artifact:
  stage: test
  script:
    - test -f out/app.txt
    - cat out/app.txt
    - test ! -f stray.txt
    - test "$CI_PROJECT_DIR" = "$PWD"
  after_script:
    - echo "after status=$CI_JOB_STATUS"
no deps:
  stage: test
  dependencies: []
  script: [test ! -e out/app.txt]
failing:
  stage: deploy
  script:
    - echo "about to fail"
    - "false"
    - echo "never printed"
  after_script:
    - 'echo "after failing: $CI_JOB_STATUS"'

skipped later:
  stage: cleanup
  script: [echo nope]
on failure:
  stage: cleanup
  when: on_failure
  script: [echo "cleanup after failure"]
always:
  stage: cleanup
  when: always
  script: [echo always]
"#;

#[tokio::test]
async fn isolated_pipeline_with_artifacts_failure_allow_failure_and_masking() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README"), "demo project").unwrap();
    let plan = plan_for(project.path(), PIPELINE);
    let work = tempfile::tempdir().unwrap();
    let opts = RunOptions::new(project.path())
        .isolate(true)
        .concurrency(2)
        .work_dir(work.path());
    let (report, events) = run(&plan, opts).await;

    let status = |name: &str| {
        report
            .job(name)
            .unwrap_or_else(|| panic!("no report for {name}"))
            .status
    };
    assert_eq!(status("build"), JobStatus::Passed);
    assert_eq!(status("stray"), JobStatus::Passed);
    assert_eq!(status("flaky lint"), JobStatus::AllowedFailure);
    assert_eq!(report.job("flaky lint").unwrap().exit_code, Some(3));
    assert_eq!(
        status("check artifact"),
        JobStatus::Passed,
        "{:?}",
        lines_of(&events, "check artifact")
    );
    assert_eq!(
        status("no deps"),
        JobStatus::Passed,
        "{:?}",
        lines_of(&events, "no deps")
    );
    assert_eq!(status("failing"), JobStatus::Failed);
    assert_eq!(status("skipped later"), JobStatus::Skipped);
    assert_eq!(status("on failure"), JobStatus::Passed);
    assert_eq!(status("always"), JobStatus::Passed);
    assert!(!report.success());

    // Masking: the secret never reaches the output, its marker does.
    let build = lines_of(&events, "build");
    assert!(build.contains(&"token is [MASKED]".to_owned()), "{build:?}");
    assert!(
        build.contains(&"before build in build".to_owned()),
        "{build:?}"
    );
    assert!(
        build.contains(&"WARNING: missing.txt: no matching files".to_owned()),
        "{build:?}"
    );
    let all: Vec<String> = events.iter().map(ToString::to_string).collect();
    assert!(all.iter().all(|l| !l.contains(SECRET)));
    // Output is prefixed by the job name.
    assert!(all.contains(&"[build] token is [MASKED]".to_owned()));

    // The artifact travelled from `build` to `check artifact`, not the stray file.
    let check = lines_of(&events, "check artifact");
    assert!(check.contains(&"built 3c602112".to_owned()), "{check:?}");
    assert!(
        check.contains(&"after status=success".to_owned()),
        "{check:?}"
    );

    // `sh -e` stops at the failing command; after_script still runs and sees the status.
    let failing = lines_of(&events, "failing");
    assert!(
        failing.contains(&"$ echo \"about to fail\"".to_owned()),
        "{failing:?}"
    );
    assert!(failing.contains(&"about to fail".to_owned()));
    assert!(!failing.iter().any(|l| l == "never printed"));
    assert!(
        failing.contains(&"after failing: failed".to_owned()),
        "{failing:?}"
    );

    // Nothing was written into the project itself.
    assert!(!project.path().join("out").exists());
    assert!(!project.path().join("stray.txt").exists());

    let table = report.summary_table();
    assert!(table.starts_with("JOB "), "{table}");
    assert!(table.contains("flaky lint"));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("skipped later") && l.contains("skipped")),
        "{table}"
    );
    assert!(
        table.trim_end().ends_with('s') && table.contains("pipeline failed"),
        "{table}"
    );
}

#[tokio::test]
async fn jobs_of_a_stage_run_concurrently_up_to_the_bound() {
    let project = tempfile::tempdir().unwrap();
    let yaml = "a:\n  script: [sleep 0.6]\nb:\n  script: [sleep 0.6]\nc:\n  script: [sleep 0.6]\n";
    let plan = plan_for(project.path(), yaml);

    let t = Instant::now();
    let (report, _) = run(&plan, RunOptions::new(project.path()).concurrency(3)).await;
    let parallel = t.elapsed();
    assert!(report.success());
    assert!(
        parallel < Duration::from_millis(1500),
        "3 jobs, bound 3: {parallel:?}"
    );

    let t = Instant::now();
    let (report, _) = run(&plan, RunOptions::new(project.path()).concurrency(1)).await;
    let serial = t.elapsed();
    assert!(report.success());
    assert!(
        serial >= Duration::from_millis(1800),
        "3 jobs, bound 1: {serial:?}"
    );
}

#[tokio::test]
async fn shim_directory_comes_first_on_path() {
    let project = tempfile::tempdir().unwrap();
    let shims = tempfile::tempdir().unwrap();
    let docker = shims.path().join("docker");
    std::fs::write(&docker, "#!/bin/sh\necho \"shim docker $*\"\n").unwrap();
    let mut perms = std::fs::metadata(&docker).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&docker, perms).unwrap();

    let plan = plan_for(
        project.path(),
        "push:\n  script: [docker push $CI_PROJECT_NAME:$CI_COMMIT_SHORT_SHA]\n",
    );
    let (report, events) = run(
        &plan,
        RunOptions::new(project.path()).path_prepend(shims.path()),
    )
    .await;
    assert!(report.success());
    assert!(lines_of(&events, "push").contains(&"shim docker push demo:3c602112".to_owned()));
}

#[tokio::test]
async fn stderr_lines_are_tagged_and_masked_too() {
    let project = tempfile::tempdir().unwrap();
    let plan = plan_for(
        project.path(),
        "j:\n  script: ['echo \"err $SECRET_TOKEN\" >&2']\n",
    );
    let (_, events) = run(&plan, RunOptions::new(project.path())).await;
    assert!(events.contains(&Event::Output {
        job: "j".into(),
        stream: Stream::Stderr,
        line: "err [MASKED]".into()
    }));
}
