//! The shell executor: a job's scripts run on the host with `sh -e`.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Command;

use super::{JobContext, JobOutcome, JobOutput, JobRunner, Stream};
use crate::error::{Error, Result};
use crate::plan::PlannedJob;

/// Runs scripts on the host (`--executor shell`), like GitLab Runner's shell executor: each
/// command is echoed as `$ command`, `before_script` + `script` run in one `sh -e` session,
/// `after_script` in another one afterwards, whatever happened.
#[derive(Debug, Clone)]
pub struct ShellRunner {
    shell: PathBuf,
    inherit_env: bool,
}

impl Default for ShellRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl ShellRunner {
    /// `sh` from `PATH`, inheriting the host environment under the job's variables.
    pub fn new() -> Self {
        Self {
            shell: PathBuf::from("sh"),
            inherit_env: true,
        }
    }

    /// Uses another POSIX shell (it must accept `-e -c SCRIPT`).
    #[must_use]
    pub fn shell(mut self, shell: impl Into<PathBuf>) -> Self {
        self.shell = shell.into();
        self
    }

    /// Whether jobs see the host environment (`HOME`, `PATH`, …) below their variables.
    #[must_use]
    pub fn inherit_env(mut self, yes: bool) -> Self {
        self.inherit_env = yes;
        self
    }

    async fn session(
        &self,
        job: &str,
        lines: &[String],
        cx: &JobContext,
        out: &JobOutput,
    ) -> Result<Option<i32>> {
        let mut cmd = Command::new(&self.shell);
        cmd.arg("-e").arg("-c").arg(script_text(lines));
        if !self.inherit_env {
            cmd.env_clear();
        }
        let host_path =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        cmd.envs(&cx.env)
            .env("PATH", cx.path_var(&host_path))
            .current_dir(&cx.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a job stopped early (`timeout:`, the run
            // cancelled) takes the commands its script started with it.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(ok) = cx.job_status {
            cmd.env("CI_JOB_STATUS", if ok { "success" } else { "failed" });
        }
        let io = |action: &str| {
            let action = action.to_owned();
            move |source| Error::JobIo {
                job: job.to_owned(),
                action,
                source,
            }
        };
        let mut child = cmd
            .spawn()
            .map_err(io(&format!("spawn {}", self.shell.display())))?;
        let mut group = GroupGuard(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw),
        );
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (r1, r2) = tokio::join!(
            pump(stdout, Stream::Stdout, out),
            pump(stderr, Stream::Stderr, out)
        );
        r1.map_err(io("read job stdout"))?;
        r2.map_err(io("read job stderr"))?;
        let status = child.wait().await.map_err(io("wait for the job shell"))?;
        group.0 = None;
        Ok(status.code())
    }
}

/// Kills the process group of a job shell that is dropped before it was waited for (the
/// future was cancelled), so no command of the job outlives it.
struct GroupGuard(Option<rustix::process::Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // The group may be gone already; nothing else to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Builds the script: each command echoed (`$ cmd`, as GitLab Runner prints it) then run.
fn script_text(lines: &[String]) -> String {
    let mut s = String::new();
    for line in lines {
        // Single-quote the echo; a `'` inside becomes `'\''`.
        let quoted = line.replace('\'', r"'\''");
        s.push_str(&format!("printf '%s\\n' '$ {quoted}'\n{line}\n"));
    }
    s
}

async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    stream: Stream,
    out: &JobOutput,
) -> std::io::Result<()> {
    let Some(reader) = reader else { return Ok(()) };
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf);
        out.line(stream, text.trim_end_matches(['\n', '\r']));
    }
}

impl JobRunner for ShellRunner {
    fn stops_when_dropped(&self) -> bool {
        true
    }

    async fn run(&self, job: &PlannedJob, cx: &JobContext, out: &JobOutput) -> Result<JobOutcome> {
        let mut main: Vec<String> = job.before_script.clone();
        main.extend(job.script.iter().cloned());
        let code = self.session(&job.name, &main, cx, out).await?;
        if !job.after_script.is_empty() {
            let mut after_cx = cx.clone();
            after_cx.job_status = Some(code == Some(0));
            out.line(Stream::System, "running after_script");
            // GitLab: after_script failures are reported but do not change the job status.
            match self
                .session(&job.name, &job.after_script, &after_cx, out)
                .await
            {
                Ok(Some(0)) => {}
                Ok(c) => out.line(
                    Stream::System,
                    &format!("WARNING: after_script failed (exit {c:?})"),
                ),
                Err(e) => out.line(
                    Stream::System,
                    &format!("WARNING: after_script could not run: {e}"),
                ),
            }
        }
        Ok(JobOutcome { exit_code: code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_echoes_commands_with_quotes_intact() {
        let s = script_text(&["echo 'it'".into()]);
        assert_eq!(
            s,
            r#"printf '%s\n' '$ echo '\''it'\'''"#.to_owned() + "\necho 'it'\n"
        );
        // And the shell prints exactly the command back, then runs it.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&s)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "$ echo 'it'\nit\n");
    }
}
