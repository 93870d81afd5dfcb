//! `rbuild login`.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;
use rbuild::registry::{Credentials, CredentialsEnv};

use super::RegistryFlags;

/// Arguments of `rbuild login`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The registry, e.g. `127.0.0.1:5000` or `docker.io`.
    server: String,
    /// The username [default: asked on the terminal].
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// The password (visible to other users in `ps`: prefer `--password-stdin`).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
}

/// The registry host a login is for: `https://index.docker.io/v1/` and other spellings of
/// Docker Hub become `docker.io`; a scheme and path are dropped, as `docker login` does with
/// `registry.ConvertToHostname`.
pub(crate) fn normalise_server(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        h => h.to_owned(),
    }
}

/// Reads a line from the terminal with echo off (through `stty`, which every Linux has), so
/// the password is never shown.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let stty = |arg: &str| {
        Command::new("stty")
            .arg(arg)
            .stdin(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    let hidden = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        stty("echo");
    }
    eprintln!();
    read.context("failed to read the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs `rbuild login`: verifies the credentials against the registry (`GET /v2/`, with the
/// token flow when the registry asks for one), then stores them in `config.json` (mode 0600).
/// The password is never printed, not even in errors.
pub(crate) async fn run(flags: &RegistryFlags, args: Args) -> anyhow::Result<ExitCode> {
    let server = normalise_server(&args.server);
    let interactive = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if interactive && !args.password_stdin => {
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut u = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut u)
                .context("failed to read the username")?;
            u.trim().to_owned()
        }
        None => anyhow::bail!("a username is needed: rbuild login -u USER {server}"),
    };
    if username.is_empty() {
        anyhow::bail!("the username is empty");
    }
    let password = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_to_string(&mut p)
            .context("failed to read the password from stdin")?;
        p.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if interactive {
        read_hidden("Password: ")?
    } else {
        // docker's message for the same situation.
        anyhow::bail!(
            "cannot perform an interactive login from a non TTY device: use --password-stdin"
        );
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let client = flags.client()?;
    client
        .login(&server, Credentials::password(&username, &password))
        .await
        .with_context(|| format!("failed to log in to {server} as {username}"))?;
    let path = CredentialsEnv::from_process_env()
        .store(&server, &username, &password)
        .with_context(|| format!("failed to store the credentials for {server}"))?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_normalise_like_docker() {
        assert_eq!(normalise_server("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_server("registry-1.docker.io"), "docker.io");
        assert_eq!(normalise_server("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(normalise_server("quay.io"), "quay.io");
    }
}
