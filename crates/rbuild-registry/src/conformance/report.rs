//! The outcome of a conformance run and its three renderings: a human summary, JUnit XML for
//! CI, and the stable JSON that scripts read.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::Workflow;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The registry did what the spec asks.
    Passed,
    /// It did not; the detail shows the request and response lines.
    Failed,
    /// The check could not run (a step it depends on failed, or the registry opted out of an
    /// optional feature the spec allows it to lack).
    Skipped,
}

impl Status {
    /// `passed`, `failed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// One check: what it verifies, the spec section it enforces, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable name, e.g. `PATCH out-of-order chunk answers 416`.
    pub name: String,
    /// The distribution-spec 1.1 section (and endpoint ID) it enforces.
    pub spec: String,
    /// The outcome.
    pub status: Status,
    /// For failures, the failing request and response lines; otherwise a note (may be empty).
    pub detail: String,
}

/// The checks of one workflow, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowReport {
    /// Which workflow.
    pub workflow: Workflow,
    /// Its checks.
    pub checks: Vec<Check>,
}

impl WorkflowReport {
    /// How many checks ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// A failed check as an error, for callers that treat any failure as one (`report.failures()`
/// then `?`): names the registry and namespace, the workflow, the check and its spec section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target}: {workflow} check `{check}` failed ({spec})\n{detail}")]
pub struct CheckFailed {
    /// `registry/namespace` the run was against.
    pub target: String,
    /// The workflow the check belongs to.
    pub workflow: Workflow,
    /// The check's name.
    pub check: String,
    /// The spec section it enforces.
    pub spec: String,
    /// The failing request and response lines.
    pub detail: String,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `registry/namespace` the run was against.
    pub target: String,
    /// The ID in every tag and test blob of the run (`pull-<id>`, `disc-<id>-a`, …): how to
    /// find what `--keep` left.
    pub run_id: String,
    /// The selected workflows, in the order they ran.
    pub workflows: Vec<WorkflowReport>,
    /// What the run pushed and could not delete afterwards (`--keep` leaves everything).
    pub leftovers: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Whether any check failed.
    pub fn has_failures(&self) -> bool {
        self.count(Status::Failed) > 0
    }

    /// How many checks, over all workflows, ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.workflows.iter().map(|w| w.count(status)).sum()
    }

    /// The failed checks, as errors naming the target, workflow and check.
    pub fn failures(&self) -> impl Iterator<Item = CheckFailed> + '_ {
        self.checks()
            .filter(|(_, c)| c.status == Status::Failed)
            .map(|(workflow, c)| CheckFailed {
                target: self.target.clone(),
                workflow,
                check: c.name.clone(),
                spec: c.spec.clone(),
                detail: c.detail.clone(),
            })
    }

    /// Every check with its workflow.
    pub fn checks(&self) -> impl Iterator<Item = (Workflow, &Check)> {
        self.workflows
            .iter()
            .flat_map(|w| w.checks.iter().map(move |c| (w.workflow, c)))
    }

    /// The JSON shape scripts read (stable):
    /// `{"workflows": [{"name": "pull", "checks": [{"name", "status", "spec", "detail"}]}]}`,
    /// plus `target`, `run_id`, `summary` counts, `leftovers` and `elapsed_seconds`.
    pub fn to_json(&self) -> serde_json::Value {
        let workflows: Vec<serde_json::Value> = self
            .workflows
            .iter()
            .map(|w| {
                serde_json::json!({
                    "name": w.workflow.name(),
                    "checks": w.checks,
                })
            })
            .collect();
        serde_json::json!({
            "target": self.target,
            "run_id": self.run_id,
            "workflows": workflows,
            "summary": {
                "passed": self.count(Status::Passed),
                "failed": self.count(Status::Failed),
                "skipped": self.count(Status::Skipped),
            },
            "leftovers": self.leftovers,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
        })
    }

    /// JUnit XML: one `<testsuite>` per workflow, one `<testcase>` per check, the spec section
    /// as a property, failures with their request/response lines.
    pub fn to_junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            xml(&format!(
                "OCI distribution-spec conformance: {}",
                self.target
            )),
            self.count(Status::Passed) + self.count(Status::Failed) + self.count(Status::Skipped),
            self.count(Status::Failed),
            self.count(Status::Skipped),
            self.elapsed.as_secs_f64()
        );
        for w in &self.workflows {
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
                w.workflow.name(),
                w.checks.len(),
                w.count(Status::Failed),
                w.count(Status::Skipped)
            );
            for c in &w.checks {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\">\n      <properties><property name=\"spec\" value=\"{}\"/></properties>\n",
                    w.workflow.name(),
                    xml(&c.name),
                    xml(&c.spec)
                );
                match c.status {
                    Status::Failed => {
                        let first = c.detail.lines().next().unwrap_or("");
                        let _ = writeln!(
                            out,
                            "      <failure message=\"{}\">{}</failure>",
                            xml(first),
                            xml(&c.detail)
                        );
                    }
                    Status::Skipped => {
                        let _ = writeln!(out, "      <skipped message=\"{}\"/>", xml(&c.detail));
                    }
                    Status::Passed if !c.detail.is_empty() => {
                        let _ = writeln!(out, "      <system-out>{}</system-out>", xml(&c.detail));
                    }
                    Status::Passed => {}
                }
                out.push_str("    </testcase>\n");
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }

    /// The human summary: per workflow a count line, then each failed check with its spec
    /// section and request/response lines, and skipped checks with their reason.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "OCI distribution-spec 1.1 conformance: {} (run {})\n",
            self.target, self.run_id
        );
        for w in &self.workflows {
            let _ = writeln!(
                out,
                "\n{}: {} passed, {} failed, {} skipped",
                w.workflow.name(),
                w.count(Status::Passed),
                w.count(Status::Failed),
                w.count(Status::Skipped)
            );
            for c in &w.checks {
                let mark = match c.status {
                    Status::Passed => "ok  ",
                    Status::Failed => "FAIL",
                    Status::Skipped => "skip",
                };
                let _ = writeln!(out, "  {mark} {}  [{}]", c.name, c.spec);
                if c.status != Status::Passed || !c.detail.is_empty() {
                    for line in c.detail.lines() {
                        let _ = writeln!(out, "         {line}");
                    }
                }
            }
        }
        if !self.leftovers.is_empty() {
            let _ = writeln!(out, "\nleft behind (the registry refused to delete them):");
            for l in &self.leftovers {
                let _ = writeln!(out, "  {l}");
            }
        }
        let _ = writeln!(
            out,
            "\ntotal: {} passed, {} failed, {} skipped in {:.1}s",
            self.count(Status::Passed),
            self.count(Status::Failed),
            self.count(Status::Skipped),
            self.elapsed.as_secs_f64()
        );
        out
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            target: "127.0.0.1:5000/conf".into(),
            run_id: "0123456789".into(),
            workflows: vec![WorkflowReport {
                workflow: Workflow::Push,
                checks: vec![
                    Check {
                        name: "a <b>".into(),
                        spec: "§x".into(),
                        status: Status::Passed,
                        detail: String::new(),
                    },
                    Check {
                        name: "c".into(),
                        spec: "§y".into(),
                        status: Status::Failed,
                        detail: "> PATCH /v2/x\n< 202 Accepted".into(),
                    },
                ],
            }],
            leftovers: vec![],
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn failures_are_errors_naming_target_workflow_and_check() {
        let r = report();
        let failures: Vec<CheckFailed> = r.failures().collect();
        assert_eq!(failures.len(), 1);
        let f = &failures[0];
        assert_eq!(
            (
                f.target.as_str(),
                f.workflow,
                f.check.as_str(),
                f.spec.as_str()
            ),
            ("127.0.0.1:5000/conf", Workflow::Push, "c", "§y")
        );
        assert_eq!(
            f.to_string(),
            "127.0.0.1:5000/conf: push check `c` failed (§y)\n> PATCH /v2/x\n< 202 Accepted"
        );
    }

    #[test]
    fn json_has_the_stable_shape() {
        let j = report().to_json();
        assert_eq!(j["workflows"][0]["name"], "push");
        let c = &j["workflows"][0]["checks"][1];
        assert_eq!(c["name"], "c");
        assert_eq!(c["status"], "failed");
        assert_eq!(c["spec"], "§y");
        assert!(c["detail"].as_str().unwrap().contains("202"));
        assert_eq!(j["summary"]["failed"], 1);
    }

    #[test]
    fn junit_escapes_and_counts() {
        let x = report().to_junit();
        assert!(x.contains("name=\"a &lt;b&gt;\""), "{x}");
        assert!(x.contains("failures=\"1\""), "{x}");
        assert!(x.contains("<failure message=\"&gt; PATCH /v2/x\">"), "{x}");
        let t = report().to_text();
        assert!(t.contains("push: 1 passed, 1 failed, 0 skipped"), "{t}");
        assert!(t.contains("FAIL c  [§y]"), "{t}");
    }
}
