//! `rbuild pull`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rbuild::registry::{self, Events, Platform, PullEvent};

use super::RegistryFlags;
use super::push::Transfer;

/// Arguments of `rbuild pull`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The image, e.g. `127.0.0.1:5000/app:1` or `busybox@sha256:…`.
    reference: String,
    /// The platform to pick from a multi-platform image [default: this machine's].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
}

/// Runs `rbuild pull`: docker's lines (`<12 hex>: Pull complete`, `Digest: sha256:…`,
/// `Status: …`), last line the reference now in the store.
pub(crate) async fn run(
    root: &Path,
    flags: &RegistryFlags,
    args: Args,
) -> anyhow::Result<ExitCode> {
    let reference = super::parse_reference(&args.reference)?;
    let store = super::open_store(root)?;
    let client = flags.client()?;
    println!(
        "{}: Pulling from {}",
        reference.tag_or_digest(),
        reference.repository()
    );
    let downloaded = Arc::new(AtomicBool::new(false));
    let resolved = Arc::new(Mutex::new(None));
    let display = Arc::new(Transfer::new());
    let events = {
        let (downloaded, resolved, display) = (
            Arc::clone(&downloaded),
            Arc::clone(&resolved),
            Arc::clone(&display),
        );
        Events::new(move |e: PullEvent| {
            match e {
                PullEvent::Downloaded { .. } => downloaded.store(true, Ordering::Relaxed),
                // docker prints the digest after the layers.
                PullEvent::Resolved { digest } => {
                    if let Ok(mut r) = resolved.lock() {
                        *r = Some(digest);
                    }
                    return;
                }
                _ => {}
            }
            display.pull_event(e);
        })
    };
    let result = registry::pull(&store, &client, &reference, args.platform.as_ref(), events).await;
    display.finish();
    let digest = result.with_context(|| format!("failed to pull {reference}"))?;
    // The digest of the manifest now in the store: the platform's, when REF is an index.
    let shown = resolved
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .unwrap_or(digest);
    println!("Digest: {shown}");
    // docker's wording: whether anything new arrived.
    if downloaded.load(Ordering::Relaxed) {
        println!(
            "Status: Downloaded newer image for {}",
            reference.familiar()
        );
    } else {
        println!("Status: Image is up to date for {}", reference.familiar());
    }
    println!("{reference}");
    Ok(ExitCode::SUCCESS)
}
