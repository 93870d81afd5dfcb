//! Predefined `CI_*` variables, from git (via the `git` command) or injected for tests.
//!
//! Names and meanings follow <https://docs.gitlab.com/ee/ci/variables/predefined_variables.html>;
//! the pre-9.0 names (`CI_BUILD_REF`, `CI_BUILD_REF_NAME`, `CI_BUILD_TOKEN`, …, listed in
//! GitLab's "deprecated variables" table) are set as aliases because older pipelines, like the
//! one our users start from, still use them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::slug::{environment_slug, ref_slug};
use crate::variables::{Variable, Variables};

/// What the pipeline runs for: a branch or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A branch name (`CI_COMMIT_BRANCH`).
    Branch(String),
    /// A tag name (`CI_COMMIT_TAG`).
    Tag(String),
}

impl GitRef {
    /// The ref name (`CI_COMMIT_REF_NAME`).
    pub fn name(&self) -> &str {
        match self {
            GitRef::Branch(n) | GitRef::Tag(n) => n,
        }
    }
}

/// Facts about the repository that the predefined variables come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitInfo {
    /// Full commit SHA.
    pub sha: String,
    /// Branch or tag the pipeline runs for.
    pub git_ref: GitRef,
    /// `CI_PROJECT_NAME`: the remote's repository name, else the directory name.
    pub project_name: String,
    /// `CI_PROJECT_PATH` (`group/name`) when a remote URL gives one.
    pub project_path: Option<String>,
    /// `CI_DEFAULT_BRANCH`.
    pub default_branch: String,
}

impl GitInfo {
    /// Reads the facts from the repository at `dir` with the `git` command.
    ///
    /// The ref is the checked-out branch; on a detached HEAD, a tag pointing at HEAD; else
    /// `HEAD`. Override it with [`GitInfo::with_ref`] (`--branch`/`--tag`).
    ///
    /// # Errors
    ///
    /// [`Error::Git`] when `git` cannot run or `dir` is not a repository with a commit.
    pub fn discover(dir: &Path) -> Result<GitInfo> {
        let sha = git(dir, &["rev-parse", "HEAD"])?;
        let git_ref = match git(dir, &["symbolic-ref", "--short", "-q", "HEAD"]) {
            Ok(b) if !b.is_empty() => GitRef::Branch(b),
            _ => match git(dir, &["describe", "--tags", "--exact-match", "HEAD"]) {
                Ok(t) if !t.is_empty() => GitRef::Tag(t),
                _ => GitRef::Branch("HEAD".into()),
            },
        };
        let remote = git(dir, &["remote"]).ok().and_then(|r| {
            let names: Vec<&str> = r.lines().collect();
            let pick = if names.contains(&"origin") {
                Some("origin")
            } else {
                names.first().copied()
            };
            pick.and_then(|n| git(dir, &["remote", "get-url", n]).ok())
        });
        let dir_name = std::fs::canonicalize(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "project".into());
        let (project_name, project_path) = match remote.as_deref().and_then(project_from_url) {
            Some((name, path)) => (name, Some(path)),
            None => (dir_name, None),
        };
        let default_branch = git(
            dir,
            &["symbolic-ref", "--short", "-q", "refs/remotes/origin/HEAD"],
        )
        .ok()
        .and_then(|s| s.strip_prefix("origin/").map(str::to_owned))
        .or_else(|| {
            git(dir, &["config", "init.defaultBranch"])
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| {
            git(dir, &["rev-parse", "-q", "--verify", "refs/heads/master"])
                .ok()
                .map(|_| "master".into())
        })
        .unwrap_or_else(|| "main".into());
        Ok(GitInfo {
            sha,
            git_ref,
            project_name,
            project_path,
            default_branch,
        })
    }

    /// The same facts for another ref (the CLI's `--branch` / `--tag`).
    #[must_use]
    pub fn with_ref(mut self, git_ref: GitRef) -> Self {
        self.git_ref = git_ref;
        self
    }
}

/// Splits `git@host:group/name.git` or `https://host/group/name.git` into `(name, group/name)`.
fn project_from_url(url: &str) -> Option<(String, String)> {
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    let path = if let Some((_, rest)) = trimmed.split_once("://") {
        rest.split_once('/').map(|(_, p)| p)?
    } else if let Some((_, p)) = trimmed.split_once(':') {
        p
    } else {
        // A local path remote.
        trimmed
    };
    let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
    Some((name.to_owned(), path.trim_start_matches('/').to_owned()))
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let err = |source| Error::Git {
        args: args.join(" "),
        dir: dir.to_owned(),
        source,
    };
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(err)?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(err(std::io::Error::other(if msg.is_empty() {
            format!("exit {}", out.status)
        } else {
            msg
        })));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Pipeline-wide facts the predefined variables are computed from.
#[derive(Debug, Clone)]
pub struct PipelineContext {
    /// Repository facts.
    pub git: GitInfo,
    /// `CI_PROJECT_DIR` (for the shell executor, the checkout on the host).
    pub project_dir: PathBuf,
    /// `CI_PIPELINE_ID`.
    pub pipeline_id: u64,
    /// `CI_JOB_TOKEN` (masked in output).
    pub job_token: String,
    /// `CI_PIPELINE_SOURCE` (`push` unless told otherwise).
    pub source: String,
    /// Files changed by the pipeline's push, for `rules:changes` ([`changed_files`]); `None`
    /// when there is nothing to compare with (a tag, a first commit), where GitLab takes every
    /// `changes` rule as matching.
    pub changed_files: Option<Vec<String>>,
}

/// The files changed between `compare_to` (default: for the default branch, the previous
/// commit; for another branch, its merge base with the default branch, as GitLab compares
/// branch pipelines) and `HEAD` in the repository at `dir`. `None` for a tag pipeline or when
/// no base exists (a first commit, no default branch locally) and none was given.
///
/// # Errors
///
/// [`Error::Git`] when `compare_to` is given and git cannot resolve or diff it.
pub fn changed_files(
    dir: &Path,
    git_ref: &GitRef,
    default_branch: &str,
    compare_to: Option<&str>,
) -> Result<Option<Vec<String>>> {
    let base = match (compare_to, git_ref) {
        (Some(r), _) => git(dir, &["rev-parse", "--verify", &format!("{r}^{{commit}}")])?,
        (None, GitRef::Tag(_)) => return Ok(None),
        (None, GitRef::Branch(b)) if b == default_branch => {
            match git(dir, &["rev-parse", "--verify", "HEAD~1^{commit}"]) {
                Ok(sha) => sha,
                Err(_) => return Ok(None),
            }
        }
        (None, GitRef::Branch(_)) => match git(dir, &["merge-base", "HEAD", default_branch]) {
            Ok(sha) => sha,
            Err(_) => return Ok(None),
        },
    };
    let names = git(dir, &["diff", "--name-only", "--no-renames", &base, "HEAD"])?;
    Ok(Some(names.lines().map(str::to_owned).collect()))
}

impl PipelineContext {
    /// A context with a time-based pipeline id and a fresh random-looking job token.
    pub fn new(git: GitInfo, project_dir: impl Into<PathBuf>) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = format!("{}:{}:{}", now.as_nanos(), std::process::id(), git.sha);
        let token = hex(&Sha256::digest(seed.as_bytes()))[..20].to_owned();
        Self {
            git,
            project_dir: project_dir.into(),
            pipeline_id: now.as_secs(),
            job_token: token,
            source: "push".into(),
            changed_files: None,
        }
    }

    /// The pipeline-level predefined variables (the lowest precedence layer).
    pub fn variables(&self) -> Variables {
        let g = &self.git;
        let mut v = Variables::new();
        let short: String = g.sha.chars().take(8).collect();
        let dir = self.project_dir.to_string_lossy().into_owned();
        let pairs: [(&str, &str); 14] = [
            ("CI", "true"),
            ("CI_COMMIT_SHA", &g.sha),
            ("CI_COMMIT_SHORT_SHA", &short),
            ("CI_COMMIT_REF_NAME", g.git_ref.name()),
            ("CI_COMMIT_REF_SLUG", &ref_slug(g.git_ref.name())),
            ("CI_DEFAULT_BRANCH", &g.default_branch),
            ("CI_PROJECT_NAME", &g.project_name),
            ("CI_PROJECT_DIR", &dir),
            ("CI_PIPELINE_ID", &self.pipeline_id.to_string()),
            ("CI_PIPELINE_SOURCE", &self.source),
            // Legacy (GitLab < 9.0) names, same values.
            ("CI_BUILD_REF", &g.sha),
            ("CI_BUILD_REF_NAME", g.git_ref.name()),
            ("CI_BUILD_REF_SLUG", &ref_slug(g.git_ref.name())),
            ("CI_SERVER", "yes"),
        ];
        for (k, val) in pairs {
            v.set(k, val);
        }
        match &g.git_ref {
            GitRef::Branch(b) => v.set("CI_COMMIT_BRANCH", b.clone()),
            GitRef::Tag(t) => {
                v.set("CI_COMMIT_TAG", t.clone());
                v.set("CI_BUILD_TAG", t.clone());
            }
        }
        if let Some(p) = &g.project_path {
            v.set("CI_PROJECT_PATH", p.clone());
            v.set("CI_PROJECT_PATH_SLUG", ref_slug(p));
        }
        // The token is a credential: masked, and never expanded (`$` in it stays).
        v.push(Variable::secret("CI_JOB_TOKEN", self.job_token.clone()).with_expand(false));
        v.push(Variable::secret("CI_BUILD_TOKEN", self.job_token.clone()).with_expand(false));
        v
    }
}

/// The job-level predefined variables: `CI_JOB_NAME`, `CI_JOB_STAGE`, `CI_JOB_ID` and, for a
/// job with an `environment:` (its name already expanded), `CI_ENVIRONMENT_NAME`,
/// `CI_ENVIRONMENT_SLUG` and `CI_ENVIRONMENT_URL`, plus the legacy `CI_BUILD_*` aliases.
pub fn job_variables(
    name: &str,
    stage: &str,
    job_id: u64,
    environment: Option<(&str, Option<&str>)>,
) -> Variables {
    let mut v = Variables::new();
    v.set("CI_JOB_NAME", name);
    v.set("CI_JOB_STAGE", stage);
    v.set("CI_JOB_ID", job_id.to_string());
    v.set("CI_BUILD_NAME", name);
    v.set("CI_BUILD_STAGE", stage);
    v.set("CI_BUILD_ID", job_id.to_string());
    if let Some((env, url)) = environment {
        v.set("CI_ENVIRONMENT_NAME", env);
        v.set("CI_ENVIRONMENT_SLUG", environment_slug(env));
        if let Some(url) = url {
            v.set("CI_ENVIRONMENT_URL", url);
        }
    }
    v
}

/// Every name this module can set, for telling predefined names from user-supplied ones.
const PREDEFINED: [&str; 32] = [
    "CI",
    "CI_COMMIT_SHA",
    "CI_COMMIT_SHORT_SHA",
    "CI_COMMIT_REF_NAME",
    "CI_COMMIT_REF_SLUG",
    "CI_COMMIT_BRANCH",
    "CI_COMMIT_TAG",
    "CI_DEFAULT_BRANCH",
    "CI_PROJECT_NAME",
    "CI_PROJECT_DIR",
    "CI_PROJECT_PATH",
    "CI_PROJECT_PATH_SLUG",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_SOURCE",
    "CI_JOB_TOKEN",
    "CI_JOB_NAME",
    "CI_JOB_STAGE",
    "CI_JOB_ID",
    "CI_JOB_STATUS",
    "CI_ENVIRONMENT_NAME",
    "CI_ENVIRONMENT_SLUG",
    "CI_ENVIRONMENT_URL",
    "CI_SERVER",
    "CI_BUILD_REF",
    "CI_BUILD_REF_NAME",
    "CI_BUILD_REF_SLUG",
    "CI_BUILD_TAG",
    "CI_BUILD_TOKEN",
    "CI_BUILD_NAME",
    "CI_BUILD_STAGE",
    "CI_BUILD_ID",
    "GITLAB_CI",
];

/// Whether rbuild sets `name` itself (so the user need not supply it).
pub(crate) fn is_predefined(name: &str) -> bool {
    PREDEFINED.contains(&name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_name_from_remote_urls() {
        assert_eq!(
            project_from_url("git@gitlab.com:adtech/gotthard.git"),
            Some(("gotthard".into(), "adtech/gotthard".into()))
        );
        assert_eq!(
            project_from_url("https://gitlab.com/a/b/c.git/"),
            Some(("c".into(), "a/b/c".into()))
        );
        assert_eq!(
            project_from_url("ssh://git@host:22/grp/app"),
            Some(("app".into(), "grp/app".into()))
        );
    }

    #[test]
    fn discover_reads_a_real_repository() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(d)
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q", "-b", "master"]);
        run(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ]);
        run(&[
            "remote",
            "add",
            "origin",
            "git@gitlab.example.com:adtech/gotthard.git",
        ]);
        let info = GitInfo::discover(d).unwrap();
        assert_eq!(info.sha.len(), 40);
        assert_eq!(info.git_ref, GitRef::Branch("master".into()));
        assert_eq!(info.project_name, "gotthard");
        assert_eq!(info.default_branch, "master");

        run(&["tag", "v1.0"]);
        run(&["checkout", "-q", "--detach"]);
        assert_eq!(
            GitInfo::discover(d).unwrap().git_ref,
            GitRef::Tag("v1.0".into())
        );
    }

    #[test]
    fn predefined_values_and_aliases() {
        let git = GitInfo {
            sha: "3c60211292d79a7ee9cd1f8dcea732498630b2ce".into(),
            git_ref: GitRef::Branch("feature/Login".into()),
            project_name: "gotthard".into(),
            project_path: None,
            default_branch: "master".into(),
        };
        let mut cx = PipelineContext::new(git, "/src/gotthard");
        cx.pipeline_id = 42;
        let v = cx.variables().expand_all().unwrap();
        assert_eq!(v["CI_COMMIT_SHORT_SHA"], "3c602112");
        assert_eq!(v["CI_COMMIT_REF_SLUG"], "feature-login");
        assert_eq!(v["CI_COMMIT_BRANCH"], "feature/Login");
        assert!(!v.contains_key("CI_COMMIT_TAG"));
        assert_eq!(v["CI_BUILD_REF"], v["CI_COMMIT_SHA"]);
        assert_eq!(v["CI_BUILD_REF_NAME"], "feature/Login");
        assert_eq!(v["CI_BUILD_TOKEN"], v["CI_JOB_TOKEN"]);
        assert_eq!(v["CI_PIPELINE_ID"], "42");
        assert_eq!(cx.variables().masked_values().len(), 2);

        let j = job_variables(
            "deploy to production",
            "production",
            7,
            Some(("Production", None)),
        )
        .expand_all()
        .unwrap();
        assert_eq!(j["CI_ENVIRONMENT_SLUG"], "production-iis43c");
        assert_eq!(j["CI_BUILD_NAME"], "deploy to production");
    }
}
