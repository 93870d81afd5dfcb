//! GitLab CI pipeline model, planner and runner.
//!
//! Reads a `.gitlab-ci.yml` (anchors, `include: local` with globs and rules, `extends`, then
//! `!reference`, in GitLab's order), computes the predefined `CI_*` variables from git, plans
//! which jobs run for a branch or tag (and why the others do not: rules with `if`, `exists`
//! and `changes`, blocking manual jobs, `parallel` instances), and runs the plan as a graph
//! (`needs:` edges, else stage order, bounded concurrency; `retry`, `timeout`, `cache`,
//! dotenv reports) through a [`JobRunner`]: [`ShellRunner`]
//! on the host, or (cargo feature `image-jobs`, on by default) [`image::ImageExecutor`] in the
//! job's image through the rbuild engine. It knows nothing about Kubernetes: a caller puts
//! `docker`/`deploy` commands on the job's `PATH` ([`RunOptions::path_prepend`]), and they
//! learn about the run through the [`shim_env`] variables.
//!
//! ```no_run
//! use std::path::Path;
//! use rbuild_pipeline::{
//!     Event, GitInfo, GitRef, Pipeline, PipelineContext, PlanOptions, RunOptions, Runner, ShellRunner,
//!     Variable, Variables, plan,
//! };
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let project = Path::new(".");
//! let pipeline = Pipeline::from_file(&project.join(".gitlab-ci.yml"), project)?;
//! for warning in &pipeline.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! let git = GitInfo::discover(project)?.with_ref(GitRef::Branch("master".into()));
//! let cx = PipelineContext::new(git, project);
//! let mut secrets = Variables::new();
//! secrets.push(Variable::secret("GOOGLE_REGISTRY_TOKEN", "s3cr3t-token"));
//! let plan = plan(&pipeline, &cx, &PlanOptions::default().variables(secrets))?;
//! print!("{plan}");
//!
//! let runner = Runner::new(ShellRunner::new(), RunOptions::new(project).concurrency(2));
//! let report = runner.run(&plan, |event: &Event| println!("{event}")).await?;
//! print!("{}", report.summary_table());
//! std::process::exit(if report.success() { 0 } else { 1 });
//! # }
//! ```

mod error;
pub mod expr;
#[cfg(feature = "image-jobs")]
pub mod image;
mod load;
mod model;
mod plan;
mod predefined;
mod run;
pub mod shim_env;
pub mod slug;
pub mod variables;
mod yaml;

pub use error::{Error, PatternError, Result};
pub use model::{
    AllowFailure, Artifacts, Cache, CacheKey, CachePolicy, DEFAULT_STAGES, Environment, Image,
    Inherit, Job, Need, Pipeline, RefFilter, Retry, Rule, Timeout, Warning, When,
};
pub use plan::{Plan, PlanOptions, PlannedEnvironment, PlannedJob, PlannedStage, SkippedJob, plan};
pub use predefined::{GitInfo, GitRef, PipelineContext, changed_files, job_variables};
pub use run::{
    Event, JobContext, JobOutcome, JobOutput, JobReport, JobRunner, JobStatus, Masker, RunOptions,
    RunReport, Runner, ShellRunner, Stream,
};
pub use variables::{Variable, Variables, parse_var_file};
