//! Hostile jobs against artifact saving and restoring, with the host shell executor: a job
//! plants symlinks to a sentinel directory outside the project and the work directory, and
//! the sentinel must be neither written (restore) nor read (save).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rbuild_pipeline::{
    Event, GitInfo, GitRef, JobStatus, Pipeline, PipelineContext, Plan, PlanOptions, RunOptions,
    RunReport, Runner, ShellRunner, plan,
};

const SECRET: &str = "HOST-SECRET-4b1d9e";

fn plan_for(project: &Path, yaml: &str) -> Plan {
    let path = project.join(".gitlab-ci.yml");
    std::fs::write(&path, yaml).unwrap();
    let pipeline = Pipeline::from_file(&path, project).unwrap();
    let git = GitInfo {
        sha: "3c60211292d79a7ee9cd1f8dcea732498630b2ce".into(),
        git_ref: GitRef::Branch("master".into()),
        project_name: "demo".into(),
        project_path: None,
        default_branch: "master".into(),
    };
    plan(
        &pipeline,
        &PipelineContext::new(git, project),
        &PlanOptions::default(),
    )
    .unwrap()
}

async fn run(plan: &Plan, opts: RunOptions) -> (RunReport, Vec<String>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let report = Runner::new(ShellRunner::new(), opts)
        .run(plan, move |e: &Event| {
            sink.lock().unwrap().push(e.to_string())
        })
        .await
        .unwrap();
    let events = events.lock().unwrap().clone();
    (report, events)
}

/// A sentinel directory holding one secret file, outside everything the run may touch.
fn sentinel(base: &Path) -> std::path::PathBuf {
    let dir = base.join("sentinel");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    dir
}

/// The sentinel still holds exactly its secret file, unchanged.
fn assert_untouched(sentinel: &Path) {
    let names: Vec<_> = std::fs::read_dir(sentinel)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["secret.txt"],
        "something was written into the sentinel"
    );
    assert_eq!(
        std::fs::read_to_string(sentinel.join("secret.txt")).unwrap(),
        SECRET
    );
}

/// Every regular file below `dir` (symlinks not followed) whose bytes contain the secret.
fn files_with_secret(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file()
                && std::fs::read(&p)
                    .unwrap()
                    .windows(SECRET.len())
                    .any(|w| w == SECRET.as_bytes())
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[tokio::test]
async fn restore_never_writes_through_a_symlink_planted_in_the_checkout() {
    for isolate in [true, false] {
        let base = tempfile::tempdir().unwrap();
        let sentinel = sentinel(base.path());
        let project = base.path().join("project");
        std::fs::create_dir(&project).unwrap();
        let s = sentinel.display();
        // Isolated: `plant` hands its symlink on as an artifact, restored before `build`'s
        // directory. In place: `plant` leaves the link in the shared checkout.
        let plant_artifact = if isolate {
            "  artifacts: {paths: [out]}\n"
        } else {
            ""
        };
        let yaml = format!(
            "stages: [build, plant, check]
build:
  stage: build
  script: [mkdir -p out/sub, echo artifact > out/app.txt, echo deep > out/sub/deep.txt]
  artifacts: {{paths: [out/]}}
plant:
  stage: plant
  dependencies: []
  script: [rm -rf out, ln -s {s} out]
{plant_artifact}check:
  stage: check
  dependencies: [plant, build]
  script:
    - test ! -L out
    - test -d out
    - cat out/app.txt out/sub/deep.txt
"
        );
        let plan = plan_for(&project, &yaml);
        let work = base.path().join("work");
        let opts = RunOptions::new(&project)
            .isolate(isolate)
            .concurrency(1)
            .work_dir(&work);
        let (report, events) = run(&plan, opts).await;
        assert_untouched(&sentinel);
        assert_eq!(
            report.job("check").unwrap().status,
            JobStatus::Passed,
            "isolate={isolate}: {events:#?}"
        );
        assert!(
            events.iter().any(|l| l == "[check] artifact"),
            "{events:#?}"
        );
        // The work directory is private to the runner's user.
        let mode = std::fs::metadata(&work).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "isolate={isolate}");
    }
}

#[tokio::test]
async fn saving_symlinks_to_host_files_keeps_the_links_not_the_bytes() {
    let base = tempfile::tempdir().unwrap();
    let sentinel = sentinel(base.path());
    let project = base.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let s = sentinel.display();
    let yaml = format!(
        "stages: [build, check]
build:
  stage: build
  script:
    - ln -s {s}/secret.txt leak.txt
    - mkdir -p d target/release
    - ln -s {s} d/hostdir
    - ln -s {s} hostlink
    - ln -s ../../../../../../../../../../{s} uplink
    - ln -s /proc/self/root{s} magic
    - echo inner > target/release/app
    - ln -s target/release build
  artifacts:
    paths: [leak.txt, d/, hostlink/secret.txt, 'hostlink/**', uplink/secret.txt, magic/secret.txt, build/app]
check:
  stage: check
  script:
    - test -L leak.txt
    - test -L d/hostdir
    - cat build/app
"
    );
    let plan = plan_for(&project, &yaml);
    let work = base.path().join("work");
    let opts = RunOptions::new(&project)
        .isolate(true)
        .concurrency(1)
        .work_dir(&work);
    let (report, events) = run(&plan, opts).await;
    assert_untouched(&sentinel);
    assert_eq!(
        report.job("check").unwrap().status,
        JobStatus::Passed,
        "{events:#?}"
    );
    // The saved artifacts hold links, never the secret's bytes; neither does the output.
    assert_eq!(files_with_secret(&work), Vec::<std::path::PathBuf>::new());
    assert!(events.iter().all(|l| !l.contains(SECRET)), "{events:#?}");
    let saved = work.join("artifacts/build");
    assert!(
        std::fs::symlink_metadata(saved.join("leak.txt"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(saved.join("d/hostdir"))
            .unwrap()
            .is_symlink()
    );
    // A link that stays inside the project is followed on the way to the artifact.
    assert_eq!(
        std::fs::read_to_string(saved.join("build/app")).unwrap(),
        "inner\n"
    );
    for p in [
        "hostlink/secret.txt",
        "hostlink/**",
        "uplink/secret.txt",
        "magic/secret.txt",
    ] {
        let warning = format!(
            "[build] WARNING: {p}: leads out of the project directory through a symlink, not saved"
        );
        assert!(events.contains(&warning), "{p}: {events:#?}");
    }
}
