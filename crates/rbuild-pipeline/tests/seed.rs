//! The seed's `.gitlab-ci.yml` (testdata copy with test values), run with the shell executor and
//! recording `docker`/`deploy` shims first on `PATH`: checks the exact commands the scripts hand
//! to the shims on `master`, `production` and a feature branch, and that secrets stay masked.
//! (The real shims and the image executor are wired by the CLI; this pins what they receive.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rbuild_pipeline::{
    Event, GitInfo, GitRef, JobStatus, Pipeline, PipelineContext, PlanOptions, RunOptions, Runner,
    ShellRunner, Variable, Variables, plan,
};

const SHA: &str = "3c60211292d79a7ee9cd1f8dcea732498630b2ce";
const TOKEN: &str = "json-key-secret-0123";

fn seed_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/plan/seed/pipeline.yml")
}

fn write_shim(dir: &Path, name: &str, log: &Path) {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"{name} $*\" >> '{}'\necho \"{name} ok\"\n",
            log.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
}

/// Runs the seed for `branch`; returns the shim call log and all output lines.
async fn run_seed(branch: &str) -> (Vec<String>, Vec<String>, Vec<(String, JobStatus)>) {
    let project = tempfile::tempdir().unwrap();
    let shims = tempfile::tempdir().unwrap();
    let log = shims.path().join("calls.log");
    write_shim(shims.path(), "docker", &log);
    write_shim(shims.path(), "deploy", &log);

    let pipeline = Pipeline::from_file(&seed_file(), project.path()).unwrap();
    assert!(pipeline.warnings.is_empty(), "{:?}", pipeline.warnings);
    let git = GitInfo {
        sha: SHA.into(),
        git_ref: GitRef::Branch(branch.into()),
        project_name: "gotthard".into(),
        project_path: None,
        default_branch: "master".into(),
    };
    let cx = PipelineContext::new(git, project.path());
    let mut secrets = Variables::new();
    secrets.push(Variable::secret("GOOGLE_PROJECT_ID", "adtech-158707"));
    secrets.push(Variable::secret("GOOGLE_REGISTRY_TOKEN", TOKEN));
    secrets.push(Variable::secret("CI_REGISTRY", "127.0.0.1:5000"));
    let plan = plan(&pipeline, &cx, &PlanOptions::default().variables(secrets)).unwrap();

    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let report = Runner::new(
        ShellRunner::new(),
        RunOptions::new(project.path()).path_prepend(shims.path()),
    )
    .run(&plan, move |e: &Event| {
        sink.lock().unwrap().push(e.to_string())
    })
    .await
    .unwrap();
    assert!(report.success(), "{}", report.summary_table());
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let statuses = report
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.status))
        .collect();
    let lines = lines.lock().unwrap().clone();
    (calls, lines, statuses)
}

#[tokio::test]
async fn seed_on_master_builds_tests_and_deploys_staging() {
    let (calls, lines, statuses) = run_seed("master").await;
    let image = "127.0.0.1:5000/adtech-158707/gotthard/gotthard";
    let want = [
        format!("docker build -t {image}:{SHA} ."),
        format!("docker tag {image}:{SHA} {image}:latest"),
        format!("docker push {image}:{SHA}"),
        format!("docker push {image}:latest"),
        format!(
            "docker run {image}:{SHA} /bin/bash -c coverage run--source='.' manage.py test --noinput --settings=gotthard.settings.test && coverage report -i"
        ),
        format!("docker tag {image}:{SHA} {image}-staging:{SHA}"),
        format!("docker push {image}-staging:{SHA}"),
        "deploy gotthard-staging-worker".to_owned(),
        "deploy gotthard-staging-server".to_owned(),
    ];
    let non_login: Vec<&String> = calls
        .iter()
        .filter(|c| !c.starts_with("docker login"))
        .collect();
    assert_eq!(non_login, want.iter().collect::<Vec<_>>());
    // Each of the three jobs logs in twice (before_script).
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("docker login"))
            .count(),
        6
    );
    assert!(calls.contains(&format!(
        "docker login -u _json_key -p {TOKEN} 127.0.0.1:5000"
    )));
    // CI_BUILD_TOKEN is the generated job token.
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("docker login -u gitlab-ci-token -p ")
                && c.ends_with(" 127.0.0.1:5000"))
    );
    assert_eq!(
        statuses,
        [
            ("build image".to_owned(), JobStatus::Passed),
            ("test image".to_owned(), JobStatus::Passed),
            ("deploy to staging".to_owned(), JobStatus::Passed)
        ]
    );
    // The echoed commands are shown with secrets masked, never in clear.
    assert!(lines.iter().all(|l| !l.contains(TOKEN)));
    assert!(lines.iter().any(|l| l == "[build image] $ docker login -u _json_key -p \"${GOOGLE_REGISTRY_TOKEN}\" $REGISTRY_HOST"));
    assert!(lines.iter().any(|l| l == "[deploy to staging] deploy ok"));
}

#[tokio::test]
async fn seed_on_production_deploys_production_only() {
    let (calls, _, statuses) = run_seed("production").await;
    assert!(
        calls.contains(&"deploy gotthard-production-server".to_owned()),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.contains("staging")));
    assert_eq!(statuses.last().unwrap().0, "deploy to production");
}

#[tokio::test]
async fn seed_on_a_feature_branch_only_builds_and_tests() {
    let (calls, _, statuses) = run_seed("feature/login-form").await;
    assert!(!calls.iter().any(|c| c.starts_with("deploy")), "{calls:?}");
    let names: Vec<&str> = statuses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["build image", "test image"]);
}

#[test]
fn seed_secrets_come_from_the_environment() {
    let pipeline = Pipeline::from_file(&seed_file(), Path::new(".")).unwrap();
    let names: Vec<String> = pipeline.undefined_variables().into_iter().collect();
    assert_eq!(
        names,
        ["CI_REGISTRY", "GOOGLE_PROJECT_ID", "GOOGLE_REGISTRY_TOKEN"]
    );
    let env = |n: &str| (n == "GOOGLE_REGISTRY_TOKEN").then(|| TOKEN.to_owned());
    let secrets = pipeline.secrets_from(env);
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets.masked_values(), [TOKEN]);
}
