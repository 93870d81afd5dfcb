//! Job control with the host shell executor: `retry` (max, `when`, `exit_codes`), `timeout`
//! (the job's whole process group stopped), and `artifacts:reports:dotenv` passing variables
//! to later jobs, never read through a symlink out of the job's directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use rbuild_pipeline::{
    Event, GitInfo, GitRef, JobStatus, Pipeline, PipelineContext, Plan, PlanOptions, RunOptions,
    RunReport, Runner, ShellRunner, plan,
};

fn plan_for(project: &Path, yaml: &str) -> Plan {
    let path = project.join(".gitlab-ci.yml");
    std::fs::write(&path, yaml).unwrap();
    let pipeline = Pipeline::from_file(&path, project).unwrap();
    let git = GitInfo {
        sha: "0".repeat(40),
        git_ref: GitRef::Branch("main".into()),
        project_name: "demo".into(),
        project_path: None,
        default_branch: "main".into(),
    };
    plan(
        &pipeline,
        &PipelineContext::new(git, project),
        &PlanOptions::default(),
    )
    .unwrap()
}

async fn run(plan: &Plan, opts: RunOptions) -> (RunReport, Vec<(String, String)>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let report = Runner::new(ShellRunner::new(), opts)
        .run(plan, move |e: &Event| {
            if let Event::Output { job, line, .. } = e {
                sink.lock().unwrap().push((job.clone(), line.clone()));
            }
        })
        .await
        .unwrap();
    let lines = lines.lock().unwrap().clone();
    (report, lines)
}

fn said(lines: &[(String, String)], job: &str, text: &str) -> bool {
    lines.iter().any(|(j, l)| j == job && l.contains(text))
}

/// A script that fails on its first run in a directory and succeeds afterwards.
const FLAKY: &str = "n=$(cat ../count-$CI_JOB_NAME 2>/dev/null || echo 0); echo $((n+1)) > ../count-$CI_JOB_NAME; test $n -ge 1";

#[tokio::test]
async fn retry_reruns_failed_jobs_as_told() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    std::fs::create_dir(&project).unwrap();
    let yaml = format!(
        "flaky:\n  script: ['{FLAKY}']\n  retry: 1\n\
         other-code:\n  script: ['{FLAKY}']\n  retry: {{max: 2, exit_codes: [3]}}\n\
         other-reason:\n  script: ['{FLAKY}']\n  retry: {{max: 2, when: [runner_system_failure]}}\n\
         no-retry:\n  script: ['{FLAKY}']\n"
    );
    let plan = plan_for(&project, &yaml);
    let (report, lines) = run(&plan, RunOptions::new(&project)).await;
    let count = |job: &str| {
        std::fs::read_to_string(tmp.path().join(format!("count-{job}")))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(report.job("flaky").unwrap().status, JobStatus::Passed);
    assert_eq!(count("flaky"), "2");
    assert!(
        said(&lines, "flaky", "retrying, attempt 2 of 2"),
        "{lines:?}"
    );
    for job in ["other-code", "other-reason", "no-retry"] {
        assert_eq!(report.job(job).unwrap().status, JobStatus::Failed, "{job}");
        assert_eq!(count(job), "1", "{job} was retried");
    }
}

#[tokio::test]
async fn timeout_stops_the_job_and_what_it_started() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path();
    let plan = plan_for(
        project,
        "slow:\n  timeout: 1s\n  script: ['sleep 60 & echo $! > bg.pid; sleep 60']\n\
         next:\n  stage: deploy\n  script: [echo next]\n",
    );
    let (report, lines) = run(&plan, RunOptions::new(project)).await;
    let slow = report.job("slow").unwrap();
    assert_eq!(slow.status, JobStatus::Failed);
    assert_eq!(slow.exit_code, None);
    assert!(
        said(&lines, "slow", "exceeded its timeout of 1s"),
        "{lines:?}"
    );
    assert_eq!(report.job("next").unwrap().status, JobStatus::Skipped);
    // The background `sleep` went with the job: gone, or a zombie nobody waits for.
    // SIGKILL is delivered asynchronously: allow it a moment (a bound, not a timing target).
    let pid = std::fs::read_to_string(project.join("bg.pid")).unwrap();
    let alive = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        stat.is_ok_and(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
    };
    for _ in 0..100 {
        if !alive() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(), "the job's background process still runs");
}

#[tokio::test]
async fn dotenv_reports_pass_variables_to_later_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    std::fs::create_dir(&project).unwrap();
    // A sentinel beside the project, reachable only through a symlink a job plants.
    let sentinel = tmp.path().join("sentinel.env");
    std::fs::write(&sentinel, "STOLEN=host-secret\n").unwrap();
    let plan = plan_for(
        &project,
        &format!(
            "stages: [build, test, deploy]\n\
             version:\n  stage: build\n  script: ['echo VERSION=1.2.3 > build.env', 'echo \"LABEL=it works\" >> build.env']\n  artifacts: {{reports: {{dotenv: build.env}}}}\n\
             evil:\n  stage: build\n  script: ['ln -s {} evil.env']\n  artifacts: {{reports: {{dotenv: evil.env}}}}\n\
             by-stage:\n  stage: test\n  variables: {{VERSION: from-file}}\n  script: ['echo \"version=$VERSION label=$LABEL stolen=$STOLEN\"']\n\
             by-needs:\n  stage: deploy\n  needs: [version]\n  script: ['echo \"needs version=$VERSION\"']\n\
             no-artifacts:\n  stage: deploy\n  needs: [{{job: version, artifacts: false}}]\n  script: ['echo \"none version=$VERSION.\"']\n",
            sentinel.display()
        ),
    );
    let before = std::fs::metadata(&sentinel).unwrap().modified().unwrap();
    let (report, lines) = run(&plan, RunOptions::new(&project).isolate(true)).await;
    assert!(report.success(), "{lines:?}");
    assert!(
        said(&lines, "by-stage", "version=1.2.3 label=it works stolen="),
        "{lines:?}"
    );
    assert!(!said(&lines, "by-stage", "host-secret"), "{lines:?}");
    assert!(said(&lines, "evil", "not read"), "{lines:?}");
    assert!(said(&lines, "by-needs", "needs version=1.2.3"), "{lines:?}");
    assert!(said(&lines, "no-artifacts", "none version=."), "{lines:?}");
    assert_eq!(
        std::fs::read_to_string(&sentinel).unwrap(),
        "STOLEN=host-secret\n"
    );
    assert_eq!(
        std::fs::metadata(&sentinel).unwrap().modified().unwrap(),
        before
    );
}

#[tokio::test]
async fn cache_is_reused_across_runs_and_key_files_change_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("deps.lock"), "v1").unwrap();
    let cache_dir = tmp.path().join("cache");
    // A sentinel beside the project: a job links to it from a cached path.
    let sentinel = tmp.path().join("sentinel");
    std::fs::write(&sentinel, "host file").unwrap();
    let yaml = format!(
        "stages: [build, test]\n\
         fetch:\n  stage: build\n  cache:\n    - key: {{files: [deps.lock], prefix: deps}}\n      paths: [vendor/]\n\
         \x20 script:\n    - 'if [ -f vendor/got ]; then echo \"reused $(cat vendor/got)\"; else mkdir -p vendor; cat deps.lock > vendor/got; ln -s {} vendor/link; echo fresh; fi'\n\
         readonly:\n  stage: test\n  cache: {{key: shared, fallback_keys: [seed], paths: [out/], policy: pull}}\n  script: ['cat out/seed 2>/dev/null || echo no-seed', 'mkdir -p out; echo changed > out/seed']\n\
         seed:\n  stage: build\n  cache: {{key: seed, paths: [out/]}}\n  script: ['mkdir -p out; echo seeded > out/seed']\n",
        sentinel.display()
    );
    let plan = plan_for(&project, &yaml);
    let opts = || {
        RunOptions::new(&project)
            .isolate(true)
            .cache_dir(&cache_dir)
    };
    let (first, lines) = run(&plan, opts()).await;
    assert!(first.success(), "{lines:?}");
    assert!(said(&lines, "fetch", "fresh"), "{lines:?}");
    // `readonly` ran after `seed`: the fallback key gave it the seed's cache.
    assert!(said(&lines, "readonly", "seeded"), "{lines:?}");

    let (second, lines) = run(&plan, opts()).await;
    assert!(second.success(), "{lines:?}");
    assert!(said(&lines, "fetch", "reused v1"), "{lines:?}");
    // `policy: pull` saved nothing under `shared`: still the fallback.
    assert!(
        said(&lines, "readonly", "cache \"seed\" restored"),
        "{lines:?}"
    );

    // Another lock file content is another key: a fresh cache.
    std::fs::write(project.join("deps.lock"), "v2").unwrap();
    let plan = plan_for(&project, &yaml);
    let (third, lines) = run(&plan, opts()).await;
    assert!(third.success(), "{lines:?}");
    assert!(said(&lines, "fetch", "fresh"), "{lines:?}");
    // The cached symlink stayed a symlink: the sentinel was neither copied nor written.
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "host file");
    let saved: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("deps-") && !n.ends_with(".lock"))
        .collect();
    assert_eq!(saved.len(), 2, "{saved:?}");
    for name in saved {
        let link = cache_dir.join(name).join("vendor/link");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    }
}
