//! The outcome of a run: one row per job and the summary table.

use std::fmt;
use std::time::Duration;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Succeeded.
    Passed,
    /// Failed, and the failure fails the pipeline.
    Failed,
    /// Failed with `allow_failure`.
    AllowedFailure,
    /// Not run because of its `when` and the state of earlier stages.
    Skipped,
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobStatus::Passed => "passed",
            JobStatus::Failed => "failed",
            JobStatus::AllowedFailure => "failed (allowed)",
            JobStatus::Skipped => "skipped",
        })
    }
}

/// One row of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// Job name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// How it ended.
    pub status: JobStatus,
    /// Wall time (zero when skipped).
    pub duration: Duration,
    /// Exit code of its scripts, when it ran.
    pub exit_code: Option<i32>,
    /// Whether its failure is allowed (`allow_failure: true` or exit codes).
    pub allow_failure: bool,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Jobs in the order they finished within each stage, stages in order.
    pub jobs: Vec<JobReport>,
    /// Wall time of the whole run.
    pub duration: Duration,
}

impl RunReport {
    /// True when no job failed without `allow_failure` (the CLI exits non-zero otherwise).
    pub fn success(&self) -> bool {
        !self.jobs.iter().any(|j| j.status == JobStatus::Failed)
    }

    /// The report row of a job.
    pub fn job(&self, name: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// A plain-text table: job, stage, status, duration, allow_failure.
    pub fn summary_table(&self) -> String {
        let w_job = self
            .jobs
            .iter()
            .map(|j| j.name.len())
            .chain([3])
            .max()
            .unwrap_or(3);
        let w_stage = self
            .jobs
            .iter()
            .map(|j| j.stage.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        let mut s = format!(
            "{:<w_job$}  {:<w_stage$}  {:<16}  {:>8}  ALLOW_FAILURE\n",
            "JOB", "STAGE", "STATUS", "DURATION"
        );
        for j in &self.jobs {
            let status = j.status.to_string();
            let dur = format!("{:.1}s", j.duration.as_secs_f64());
            let allowed = if j.allow_failure { "yes" } else { "no" };
            s.push_str(&format!(
                "{:<w_job$}  {:<w_stage$}  {status:<16}  {dur:>8}  {allowed}\n",
                j.name, j.stage
            ));
        }
        let verdict = if self.success() { "passed" } else { "failed" };
        s.push_str(&format!(
            "pipeline {verdict} in {:.1}s\n",
            self.duration.as_secs_f64()
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_table_lists_jobs() {
        let report = RunReport {
            jobs: vec![JobReport {
                name: "build image".into(),
                stage: "build".into(),
                status: JobStatus::AllowedFailure,
                duration: Duration::from_millis(1500),
                exit_code: Some(1),
                allow_failure: true,
            }],
            duration: Duration::from_secs(2),
        };
        let t = report.summary_table();
        assert!(
            t.contains("build image  build  failed (allowed)      1.5s"),
            "{t}"
        );
        assert!(t.contains("1.5s  yes\n"), "{t}");
        assert!(t.ends_with("pipeline passed in 2.0s\n"));
    }

    fn row(name: &str, status: JobStatus) -> JobReport {
        JobReport {
            name: name.into(),
            stage: "test".into(),
            status,
            duration: Duration::ZERO,
            exit_code: None,
            allow_failure: false,
        }
    }

    #[test]
    fn only_a_plain_failure_fails_the_run() {
        let mut report = RunReport {
            jobs: vec![
                row("a", JobStatus::Passed),
                row("b", JobStatus::AllowedFailure),
                row("c", JobStatus::Skipped),
            ],
            duration: Duration::ZERO,
        };
        assert!(report.success());
        assert_eq!(
            report.job("b").map(|j| j.status),
            Some(JobStatus::AllowedFailure)
        );
        assert!(report.job("nope").is_none());
        report.jobs.push(row("d", JobStatus::Failed));
        assert!(!report.success());
        assert!(
            report
                .summary_table()
                .ends_with("pipeline failed in 0.0s\n")
        );
    }
}
