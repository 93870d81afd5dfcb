//! Scheduling overhead of the pipeline runner: `Runner::run` on plans of N jobs that do
//! nothing, as stages (10 stages of N/10 jobs) and as a `needs:` chain DAG, with an executor
//! that returns at once (the runner alone: graph walk, job environment, events, report) and
//! with the host shell running `script: [true]` (adds one `sh` per job). The figure to read is
//! time per job: the goal is at most 50 ms per job end to end.
//!
//! Run: `cargo bench -p rbuild-pipeline --bench pipeline_schedule`

// criterion's macros generate the undocumented `main` and group functions.
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fmt::Write as _;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rbuild_pipeline::{
    GitInfo, GitRef, JobContext, JobOutcome, JobOutput, JobRunner, Pipeline, PipelineContext, Plan,
    PlanOptions, PlannedJob, RunOptions, Runner, ShellRunner, plan,
};

/// An executor that runs nothing.
struct Noop;

impl JobRunner for Noop {
    async fn run(
        &self,
        _job: &PlannedJob,
        _cx: &JobContext,
        _out: &JobOutput,
    ) -> rbuild_pipeline::Result<JobOutcome> {
        Ok(JobOutcome::success())
    }
}

fn pipeline_text(jobs: usize, dag: bool) -> String {
    let stages = 10;
    let mut s = String::from("stages: [");
    s.push_str(
        &(0..stages)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push_str("]\n");
    for j in 0..jobs {
        let stage = j * stages / jobs;
        writeln!(s, "job{j}:\n  stage: s{stage}\n  script: [true]").unwrap();
        if dag {
            if j == 0 {
                s.push_str("  needs: []\n");
            } else {
                writeln!(s, "  needs: [job{}]", j - 1).unwrap();
            }
        }
    }
    s
}

fn make_plan(project: &Path, jobs: usize, dag: bool) -> Plan {
    let pipeline = Pipeline::parse(
        &pipeline_text(jobs, dag),
        Path::new(".gitlab-ci.yml"),
        project,
    )
    .unwrap();
    let git = GitInfo {
        sha: "0".repeat(40),
        git_ref: GitRef::Branch("main".into()),
        project_name: "bench".into(),
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let project = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("pipeline_schedule");
    group.sample_size(10);
    for (jobs, dag) in [(100, false), (100, true)] {
        let plan = make_plan(project.path(), jobs, dag);
        let shape = if dag { "dag" } else { "stages" };
        group.throughput(Throughput::Elements(jobs as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("noop/{shape}"), jobs),
            &plan,
            |b, plan| {
                let runner = Runner::new(Noop, RunOptions::new(project.path()));
                b.iter(|| rt.block_on(runner.run(plan, |_| {})).unwrap());
            },
        );
        group.bench_with_input(
            BenchmarkId::new(format!("shell-true/{shape}"), jobs),
            &plan,
            |b, plan| {
                let runner = Runner::new(ShellRunner::new(), RunOptions::new(project.path()));
                b.iter(|| {
                    let report = rt.block_on(runner.run(plan, |_| {})).unwrap();
                    assert!(report.success());
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
