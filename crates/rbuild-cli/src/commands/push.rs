//! `rbuild push`, and the transfer display `pull` and `build --push` share.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild::registry::{self, Client, Events, PullEvent, PushEvent, PushResult};
use rbuild::{Digest, Reference, Store};

use super::RegistryFlags;

/// Arguments of `rbuild push`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The image in the store (reference or manifest digest).
    source: String,
    /// Where to push it [default: SOURCE].
    destination: Option<String>,
}

/// Runs `rbuild push`: docker's lines per blob, last line `<tag>: digest: sha256:… size: N`.
pub(crate) async fn run(
    root: &Path,
    flags: &RegistryFlags,
    args: Args,
) -> anyhow::Result<ExitCode> {
    let dest = match &args.destination {
        Some(d) => super::parse_reference(d)?,
        None if args.source.starts_with("sha256:") => {
            anyhow::bail!(
                "a destination is needed to push a digest: rbuild push {} REF",
                args.source
            )
        }
        None => super::parse_reference(&args.source)?,
    };
    let store = super::open_store(root)?;
    let client = flags.client()?;
    push_one(&store, &client, &args.source, &dest).await?;
    Ok(ExitCode::SUCCESS)
}

/// Pushes `source` from the store to `dest` with the transfer display; the final docker line
/// goes to stdout.
pub(crate) async fn push_one(
    store: &Store,
    client: &Client,
    source: &str,
    dest: &Reference,
) -> anyhow::Result<PushResult> {
    println!("The push refers to repository [{}]", dest.name());
    let display = Arc::new(Transfer::new());
    let sink = Arc::clone(&display);
    let events = Events::new(move |e| sink.push_event(e));
    let result = registry::push(store, client, source, dest, events).await;
    display.finish();
    // The engine's error already reads `failed to push SRC to DEST`.
    Ok(result?)
}

/// Shows blob transfers: bars on a terminal (stderr), docker's plain lines otherwise.
pub(crate) struct Transfer {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Transfer {
    /// Bars when stderr is a terminal, lines otherwise.
    pub(crate) fn new() -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            multi,
            bars: Mutex::default(),
        }
    }

    /// Prints a finished line: above the bars (stderr) on a terminal, on stdout otherwise.
    fn line(&self, line: String) {
        match &self.multi {
            // Hide the bars, print, draw them again below.
            Some(m) => m.suspend(|| eprintln!("{line}")),
            None => println!("{line}"),
        }
    }

    fn bar(&self, digest: &Digest, verb: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().ok()?;
        let bar = bars.entry(digest.clone()).or_insert_with(|| {
            let pb = multi.add(ProgressBar::new(0));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb.set_prefix(digest.short().to_owned());
            pb
        });
        bar.set_message(verb.to_owned());
        Some(bar.clone())
    }

    fn done(&self, digest: &Digest, line: String) {
        let bar = self.bars.lock().ok().and_then(|mut b| b.remove(digest));
        match bar {
            Some(pb) => {
                pb.finish_and_clear();
                self.line(line);
            }
            None => self.line(line),
        }
    }

    /// Shows a push event.
    pub(crate) fn push_event(&self, e: PushEvent) {
        match &e {
            PushEvent::Preparing { digest, config } => {
                if *config {
                    return;
                }
                if self.bar(digest, "Preparing").is_none()
                    && let Some(l) = e.docker_line()
                {
                    self.line(l);
                }
            }
            PushEvent::Progress {
                digest,
                done,
                total,
            } => {
                // The config has no line in docker's output; only layers with a bar move.
                let has_bar = self
                    .bars
                    .lock()
                    .map(|b| b.contains_key(digest))
                    .unwrap_or(false);
                if has_bar && let Some(pb) = self.bar(digest, "Pushing") {
                    pb.set_length(*total);
                    pb.set_position(*done);
                }
            }
            PushEvent::Blob { digest, .. } => {
                if let Some(l) = e.docker_line() {
                    self.done(digest, l);
                }
            }
            PushEvent::Done { .. } => {
                // The final line is the command's result: always on stdout.
                if let Some(l) = e.docker_line() {
                    self.finish();
                    println!("{l}");
                }
            }
            // The manifest line is `Done`'s; later kinds of event show nothing yet.
            _ => {}
        }
    }

    /// Shows a pull event.
    pub(crate) fn pull_event(&self, e: PullEvent) {
        match &e {
            PullEvent::Progress {
                digest,
                done,
                total,
            } => {
                if let Some(pb) = self.bar(digest, "Downloading") {
                    pb.set_length(*total);
                    pb.set_position(*done);
                }
            }
            PullEvent::Downloaded { digest } | PullEvent::AlreadyExists { digest } => {
                if let Some(l) = e.docker_line() {
                    self.done(digest, l);
                }
            }
            PullEvent::Resolved { .. } => {
                if let Some(l) = e.docker_line() {
                    self.line(l);
                }
            }
            _ => {}
        }
    }

    fn clear(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, pb) in bars.drain() {
                pb.finish_and_clear();
            }
        }
    }

    /// Removes any bar left (after an error).
    pub(crate) fn finish(&self) {
        self.clear();
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
