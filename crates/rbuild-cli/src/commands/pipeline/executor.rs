//! The CLI's job executor: the host shell, or the job's image through the rbuild sandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rbuild::sandbox::{BindMount, RunSpec, Stdio};
use rbuild_pipeline::{
    Error as PipelineError, JobContext, JobOutcome, JobOutput, JobRunner, PlannedJob, ShellRunner,
    Stream,
};

use crate::commands::RegistryFlags;
use crate::shim::PUSHES_ENV;

/// Which executor a job gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// The image executor for jobs with `image:`, the shell for the others (the default).
    ByJob,
    /// Every job in its image; a job without one fails.
    Image,
    /// Every job on the host.
    Shell,
}

/// Runs jobs on the host or in their image; gives each job a temporary directory whose
/// `pushes` file records what its `docker push` commands pushed, for `deploy`.
#[derive(Debug)]
pub struct Executor {
    kind: ExecutorKind,
    root: PathBuf,
    flags: RegistryFlags,
    shell: ShellRunner,
}

impl Executor {
    /// An executor using the store at `root` and registries as `flags` say.
    pub fn new(kind: ExecutorKind, root: &Path, flags: RegistryFlags) -> Self {
        Self {
            kind,
            root: root.to_owned(),
            flags,
            shell: ShellRunner::new(),
        }
    }

    async fn run_job(
        &self,
        job: &PlannedJob,
        cx: &JobContext,
        out: &JobOutput,
    ) -> anyhow::Result<JobOutcome> {
        let temp = tempfile::Builder::new()
            .prefix("rbuild-job-")
            .tempdir()
            .context("failed to create the job's temporary directory")?;
        let mut cx = cx.clone();
        // The shims run as child processes of the job: they find the store and the pushes
        // file through the environment.
        cx.env.insert(
            "RBUILD_ROOT".to_owned(),
            self.root.to_string_lossy().into_owned(),
        );
        cx.env.insert(
            PUSHES_ENV.to_owned(),
            temp.path().join("pushes").to_string_lossy().into_owned(),
        );
        for h in &self.flags.insecure_registries {
            let list = cx
                .env
                .entry(crate::shim::INSECURE_ENV.to_owned())
                .or_default();
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(h);
        }
        if !self.flags.tls_verify {
            cx.env
                .insert(crate::shim::TLS_VERIFY_ENV.to_owned(), "false".to_owned());
        }
        let in_image = match self.kind {
            ExecutorKind::Shell => false,
            ExecutorKind::ByJob => job.image.is_some(),
            ExecutorKind::Image => true,
        };
        if in_image {
            let image = job.image.clone().with_context(|| {
                format!(
                    "job {:?} has no image: give it `image:` or use --executor shell",
                    job.name
                )
            })?;
            self.run_in_image(job, &image, &cx, out).await
        } else {
            Ok(self.shell.run(job, &cx, out).await?)
        }
    }

    async fn run_in_image(
        &self,
        job: &PlannedJob,
        image: &str,
        cx: &JobContext,
        out: &JobOutput,
    ) -> anyhow::Result<JobOutcome> {
        let store = super::super::open_store(&self.root)?;
        if rbuild::image::resolve(&store, image).is_err() {
            out.line(Stream::System, &format!("pulling image {image}"));
            let reference = super::super::parse_reference(image)?;
            let client = self.flags.client()?;
            // On the blocking pool: the pull future is not provably `Send` inside the
            // executor's future (a higher-ranked closure in the registry client), and
            // `pull_blocking` drives it without that bound.
            let handle = tokio::runtime::Handle::current();
            let pull_store = store.clone();
            let pulled = reference.clone();
            tokio::task::spawn_blocking(move || {
                rbuild::registry::pull_blocking(&handle, &pull_store, &client, &pulled, None)
            })
            .await
            .context("the pull task failed")?
            .with_context(|| format!("failed to pull {reference}"))?;
        }
        out.line(Stream::System, &format!("using image {image}"));
        let mut main = job.before_script.clone();
        main.extend(job.script.iter().cloned());
        let code = self.session(&store, image, &main, cx, None, out).await?;
        if !job.after_script.is_empty() {
            out.line(Stream::System, "running after_script");
            // GitLab: after_script's failure is reported but does not change the job status.
            match self
                .session(&store, image, &job.after_script, cx, Some(code == 0), out)
                .await
            {
                Ok(0) => {}
                Ok(c) => out.line(
                    Stream::System,
                    &format!("WARNING: after_script failed (exit {c})"),
                ),
                Err(e) => out.line(
                    Stream::System,
                    &format!("WARNING: after_script could not run: {e:#}"),
                ),
            }
        }
        Ok(JobOutcome {
            exit_code: Some(code),
        })
    }

    /// One `sh -e -c` session in a fresh container of `image` with the job's directory
    /// bind-mounted at `CI_PROJECT_DIR` (as GitLab Runner's docker executor mounts the build
    /// directory), the image's environment under the job's variables.
    async fn session(
        &self,
        store: &rbuild::Store,
        image: &str,
        lines: &[String],
        cx: &JobContext,
        job_status: Option<bool>,
        out: &JobOutput,
    ) -> anyhow::Result<i32> {
        let img = super::super::load_image(store, image)?;
        rbuild::sandbox::check_support().context("the image executor needs the sandbox")?;
        let project_dir = cx
            .env
            .get("CI_PROJECT_DIR")
            .cloned()
            .unwrap_or_else(|| cx.workdir.to_string_lossy().into_owned());
        let mut env: BTreeMap<String, String> = img
            .config
            .config
            .env
            .clone()
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.extend(cx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.entry("PATH".to_owned()).or_insert_with(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        if let Some(ok) = job_status {
            env.insert(
                "CI_JOB_STATUS".to_owned(),
                if ok { "success" } else { "failed" }.to_owned(),
            );
        }
        let store = store.clone();
        let workdir = cx.workdir.clone();
        let script = script_text(lines);
        let user = img.config.config.user.clone().filter(|u| !u.is_empty());
        let hostname = img.digest.short().to_owned();
        let out = out.clone();
        let layers = img.layers.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<i32> {
            let _lock = store.lock_shared().context("failed to lock the store")?;
            let lower_dirs = rbuild::image::unpacked_dirs(&store, &layers)?;
            let staging = store
                .staging()
                .context("failed to prepare the container's upper directory")?;
            let spec = RunSpec {
                lower_dirs,
                upper_dir: staging.upper(),
                work_dir: staging.work(),
                args: vec!["sh".into(), "-e".into(), "-c".into(), script],
                env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                cwd: project_dir.clone(),
                user,
                hostname,
                stdio: Stdio::Capture,
                extra_mounts: vec![BindMount {
                    source: workdir,
                    target: project_dir,
                    readonly: false,
                }],
                ..RunSpec::default()
            };
            let mut lines = LineSplitter::default();
            let outcome = rbuild::sandbox::run(&spec, &mut |chunk| {
                lines.push(chunk, |l| out.line(Stream::Stdout, l));
            })
            .context("failed to run the job's container")?;
            lines.finish(|l| out.line(Stream::Stdout, l));
            Ok(outcome.status)
        })
        .await
        .context("the job's container task failed")?
    }
}

impl JobRunner for Executor {
    async fn run(
        &self,
        job: &PlannedJob,
        cx: &JobContext,
        out: &JobOutput,
    ) -> rbuild_pipeline::Result<JobOutcome> {
        self.run_job(job, cx, out)
            .await
            .map_err(|e| PipelineError::Executor {
                job: job.name.clone(),
                source: e.into(),
            })
    }
}

/// The script: each command echoed (`$ cmd`, as GitLab Runner prints it) then run.
fn script_text(lines: &[String]) -> String {
    let mut s = String::new();
    for line in lines {
        let quoted = line.replace('\'', r"'\''");
        s.push_str(&format!("printf '%s\\n' '$ {quoted}'\n{line}\n"));
    }
    s
}

/// Cuts a byte stream into lines (the sandbox delivers output in arbitrary chunks).
#[derive(Debug, Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            emit(text.trim_end_matches(['\n', '\r']));
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            emit(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_rejoined_across_chunks() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.push(b"hel", |l| got.push(l.to_owned()));
        s.push(b"lo\nwor", |l| got.push(l.to_owned()));
        s.push(b"ld\r\nlast", |l| got.push(l.to_owned()));
        s.finish(|l| got.push(l.to_owned()));
        assert_eq!(got, ["hello", "world", "last"]);
    }

    #[test]
    fn script_echoes_each_command() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script_text(&["echo 'a b'".into(), "true".into()]))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "$ echo 'a b'\na b\n$ true\n"
        );
    }
}
