//! The image executor used as a library, without the CLI: jobs run in their image through the
//! engine's sandbox, with the project bind-mounted at `CI_PROJECT_DIR` and nothing else of the
//! host reachable.
//!
//! The sandbox needs root, overlayfs and `/bin/busybox` (Debian's `busybox-static`); without
//! them the sandbox tests skip with the reason, and fail instead when `CI=true` or
//! `RBUILD_REQUIRE_SANDBOX` is set.

#![cfg(feature = "image-jobs")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use rbuild_pipeline::image::{ExecutorKind, ImageExecutor};
use rbuild_pipeline::{
    Event, GitInfo, GitRef, JobStatus, Pipeline, PipelineContext, Plan, PlanOptions, RunOptions,
    RunReport, Runner, Variable, Variables, plan,
};

const SECRET: &str = "image-job-secret-4711";
const IMAGE: &str = "localhost/busybox:pipeline-lib";

fn plan_for(project: &Path, yaml: &str) -> Plan {
    let path = project.join(".gitlab-ci.yml");
    std::fs::write(&path, yaml).unwrap();
    let pipeline = Pipeline::from_file(&path, project).unwrap();
    let git = GitInfo {
        sha: "3c60211292d79a7ee9cd1f8dcea732498630b2ce".into(),
        git_ref: GitRef::Branch("main".into()),
        project_name: "demo".into(),
        project_path: None,
        default_branch: "main".into(),
    };
    let mut secrets = Variables::new();
    secrets.push(Variable::secret("DEPLOY_TOKEN", SECRET));
    plan(
        &pipeline,
        &PipelineContext::new(git, project),
        &PlanOptions::default().variables(secrets),
    )
    .unwrap()
}

async fn run(executor: ImageExecutor, project: &Path, plan: &Plan) -> (RunReport, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let report = Runner::new(executor, RunOptions::new(project))
        .run(plan, move |e: &Event| {
            sink.lock().unwrap().push(e.to_string())
        })
        .await
        .unwrap();
    let lines = lines.lock().unwrap().clone();
    (report, lines)
}

/// Whether containers can run here; a skip says why, and is a failure in CI.
fn sandbox_ready() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    });
    let overlay = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay"));
    let busybox = rbuild_testkit::busybox::available();
    if root && overlay && busybox {
        return true;
    }
    let why = format!(
        "skipped: needs root ({root}), overlayfs ({overlay}) and /bin/busybox from busybox-static ({busybox})"
    );
    let required = std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!required, "{why}");
    eprintln!("{why}");
    false
}

/// Builds the busybox base image into the store at `root`.
async fn build_base(root: &Path, context: &Path) {
    rbuild_testkit::busybox::write_context(context).unwrap();
    let store = rbuild::Store::open(root).unwrap();
    let options = rbuild::BuildOptions::new(context.to_owned()).tag(IMAGE.parse().unwrap());
    rbuild::Builder::new(store).build(options).await.unwrap();
}

#[tokio::test]
async fn a_job_without_image_fails_under_the_image_kind_without_touching_the_store() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let store = work.path().join("store");
    let plan = plan_for(&project, "j:\n  script: [touch ran]\n");
    let (report, lines) = run(
        ImageExecutor::new(ExecutorKind::Image, &store),
        &project,
        &plan,
    )
    .await;
    assert!(!report.success());
    assert_eq!(report.job("j").unwrap().status, JobStatus::Failed);
    assert!(
        lines.iter().any(|l| l.contains(
            "ERROR: executor failed to run job \"j\": job \"j\" has no image: give it `image:` or run it with the shell executor"
        )),
        "{lines:#?}"
    );
    assert!(!project.join("ran").exists(), "the script ran somewhere");
    assert!(
        !store.exists(),
        "the store was created for a job that cannot run"
    );
}

#[tokio::test]
async fn shell_kind_runs_on_the_host_with_the_shim_environment() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let store = work.path().join("store");
    // `image:` is ignored by the shell kind: the script sees the host and the shim variables.
    let plan = plan_for(
        &project,
        "j:\n  image: nowhere.invalid/none:1\n  script:\n    - echo \"root=$RBUILD_ROOT\"\n    - test -n \"$RBUILD_JOB_PUSHES\"\n",
    );
    let (report, lines) = run(
        ImageExecutor::new(ExecutorKind::Shell, &store),
        &project,
        &plan,
    )
    .await;
    assert!(report.success(), "{lines:#?}");
    let expected = format!("[j] root={}", store.display());
    assert!(lines.contains(&expected), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_jobs_run_in_their_image_and_reach_only_the_project() {
    if !sandbox_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    build_base(&root, &work.path().join("context")).await;
    let project = work.path().join("checkout/project");
    std::fs::create_dir_all(&project).unwrap();
    // Beside the project on the host: the job must neither read nor overwrite it.
    let sentinel = work.path().join("checkout/sentinel.txt");
    std::fs::write(&sentinel, "host sentinel\n").unwrap();
    let plan = plan_for(
        &project,
        &format!(
            "image: {IMAGE}\n\
             variables:\n  GREETING: hello\n\
             make:\n  stage: build\n  script:\n\
             \x20   - echo \"$GREETING from $(pwd)\"\n\
             \x20   - echo built > out.txt\n\
             \x20   - echo \"token $DEPLOY_TOKEN\"\n\
             \x20   - test ! -e \"$CI_PROJECT_DIR/../sentinel.txt\"\n\
             \x20   - echo overwritten > \"$CI_PROJECT_DIR/../sentinel.txt\"\n\
             \x20   - test ! -e /etc/debian_version\n\
             \x20 after_script:\n    - echo \"after=$CI_JOB_STATUS\"\n\
             check:\n  stage: test\n  script:\n    - grep -q built out.txt\n    - exit 3\n\
             \x20 allow_failure: {{exit_codes: [3]}}\n"
        ),
    );
    let (report, lines) = run(
        ImageExecutor::new(ExecutorKind::ByJob, &root),
        &project,
        &plan,
    )
    .await;
    assert!(report.success(), "{lines:#?}");
    assert_eq!(report.job("make").unwrap().status, JobStatus::Passed);
    let check = report.job("check").unwrap();
    assert_eq!(
        (check.status, check.exit_code),
        (JobStatus::AllowedFailure, Some(3)),
        "{lines:#?}"
    );
    let has = |want: &str| lines.iter().any(|l| l == want);
    assert!(has(&format!("[make] using image {IMAGE}")), "{lines:#?}");
    assert!(
        has(&format!("[make] hello from {}", project.display())),
        "{lines:#?}"
    );
    assert!(has("[make] token [MASKED]"), "{lines:#?}");
    assert!(has("[make] after=success"), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains(SECRET)), "{lines:#?}");
    // The bind mount carried the job's write back to the host project.
    assert_eq!(
        std::fs::read_to_string(project.join("out.txt")).unwrap(),
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(&sentinel).unwrap(),
        "host sentinel\n",
        "the job wrote outside its project"
    );
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_job_over_its_timeout_is_stopped_with_its_container() {
    if !sandbox_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    build_base(&root, &work.path().join("context")).await;
    let project = work.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let marker = format!("{}", 700_000 + std::process::id() % 99_999);
    let plan = plan_for(
        &project,
        &format!(
            "image: {IMAGE}\n\
             slow:\n  timeout: 2s\n  script:\n    - sleep {marker}\n"
        ),
    );
    let (report, lines) = run(
        ImageExecutor::new(ExecutorKind::ByJob, &root),
        &project,
        &plan,
    )
    .await;
    assert!(!report.success(), "{lines:#?}");
    assert_eq!(
        report.job("slow").unwrap().status,
        JobStatus::Failed,
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("is not enforced")),
        "{lines:#?}"
    );
    // The container's processes are gone (a bound, not a timing target).
    let mut left = processes_with(&format!("sleep\0{marker}"));
    for _ in 0..300 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = processes_with(&format!("sleep\0{marker}"));
    }
    for pid in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(left.is_empty(), "container processes left: {left:?}");
}
