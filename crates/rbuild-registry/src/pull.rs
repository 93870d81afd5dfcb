//! Pulling an image: resolve an index to the platform's manifest, fetch the config and the
//! layers the sink lacks, verifying digests while streaming.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use rbuild_oci::oci_spec::image::ImageManifest;
use rbuild_oci::{Digest, Reference, media_type};

use crate::blob::BlobSink;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, Platform, select_platform};
use crate::operation::Ctx;
use crate::push::BlobRef;
use rbuild_oci::Events;

/// Progress of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullEvent {
    /// The reference resolved to this manifest (after platform selection).
    Resolved {
        /// The manifest digest.
        digest: Digest,
    },
    /// The sink already has this blob.
    AlreadyExists {
        /// The blob.
        digest: Digest,
    },
    /// Bytes of a blob received so far.
    Progress {
        /// The blob.
        digest: Digest,
        /// Bytes received.
        done: u64,
        /// Blob size.
        total: u64,
    },
    /// A blob was downloaded, verified and committed.
    Downloaded {
        /// The blob.
        digest: Digest,
    },
}

impl PullEvent {
    /// The line `docker pull` prints for this event, if any.
    pub fn docker_line(&self) -> Option<String> {
        match self {
            Self::AlreadyExists { digest } => Some(format!("{}: Already exists", digest.short())),
            Self::Downloaded { digest } => Some(format!("{}: Pull complete", digest.short())),
            Self::Resolved { digest } => Some(format!("Digest: {digest}")),
            Self::Progress { .. } => None,
        }
    }
}

/// What was pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image manifest (for the chosen platform), bytes as the registry had them.
    pub manifest: Manifest,
    /// The index the reference pointed at, when it was multi-platform.
    pub index: Option<Manifest>,
    /// The config blob.
    pub config: BlobRef,
    /// The layers, in order.
    pub layers: Vec<BlobRef>,
}

impl Client {
    /// Pulls `reference` into `sink`: an index is resolved to `platform` (default: the host's),
    /// then the config and the layers the sink does not have are fetched (bounded parallelism),
    /// each verified against its digest before it is committed.
    ///
    /// The future owns what it needs, so it is `Send + 'static` (see [`Client::push_image`]).
    ///
    /// # Errors
    ///
    /// [`Error::NoPlatform`], [`Error::DigestMismatch`] (nothing is committed for that blob),
    /// [`Error::Io`] from the sink, auth, transport and status errors.
    pub fn pull_image(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
        sink: Arc<dyn BlobSink>,
        events: Events<PullEvent>,
    ) -> impl Future<Output = Result<PulledImage>> + Send + 'static {
        let client = self.clone();
        let reference = reference.clone();
        let platform = platform.cloned();
        async move {
            client
                .pull_owned(&reference, platform.as_ref(), &*sink, &events)
                .await
        }
    }

    async fn pull_owned(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
        sink: &dyn BlobSink,
        events: &Events<PullEvent>,
    ) -> Result<PulledImage> {
        let ctx = Ctx::new("pull", reference);
        let top = self.get_manifest(reference).await?;
        let (manifest, index) = if media_type::is_index(&top.media_type) {
            let wanted = platform.cloned().unwrap_or_else(Platform::host);
            let (digest, _) = select_platform(&top.bytes, &wanted)
                // The reason keeps the parser's words: `bad image index: expected value …`.
                .map_err(|e| {
                    let cause = std::error::Error::source(&e).map(|s| format!(": {s}"));
                    ctx.protocol(format!("{e}{}", cause.unwrap_or_default()))
                })?
                .ok_or_else(|| Error::NoPlatform {
                    reference: reference.to_string(),
                    platform: wanted.to_string(),
                    available: crate::manifest::index_platforms(&top.bytes),
                })?;
            let m = self.get_manifest(&reference.with_digest(digest)).await?;
            (m, Some(top))
        } else {
            (top, None)
        };
        if !media_type::is_manifest(&manifest.media_type) {
            return Err(ctx.protocol(format!("unsupported manifest type {}", manifest.media_type)));
        }
        events.emit(PullEvent::Resolved {
            digest: manifest.digest.clone(),
        });
        let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| ctx.protocol(format!("bad image manifest: {e}")))?;
        let to_ref = |d: &rbuild_oci::oci_spec::image::Descriptor| -> Result<BlobRef> {
            Ok(BlobRef {
                digest: Digest::try_from(d.digest()).map_err(|e| ctx.protocol(e.to_string()))?,
                size: d.size(),
                media_type: d.media_type().to_string(),
            })
        };
        let config = to_ref(parsed.config())?;
        let layers = parsed
            .layers()
            .iter()
            .map(to_ref)
            .collect::<Result<Vec<_>>>()?;

        let mut wanted: Vec<&BlobRef> = Vec::new();
        for b in std::iter::once(&config).chain(&layers) {
            if wanted.iter().any(|w| w.digest == b.digest) {
                continue;
            }
            if sink.has(&b.digest) {
                events.emit(PullEvent::AlreadyExists {
                    digest: b.digest.clone(),
                });
            } else {
                wanted.push(b);
            }
        }
        // Collected first, for the same reason as in `push_image` (rust-lang/rust#102211).
        let ctx = &ctx;
        let downloads: Vec<_> = wanted
            .into_iter()
            .map(|b| async move {
                self.pull_blob(ctx, reference, b, sink, events).await?;
                events.emit(PullEvent::Downloaded {
                    digest: b.digest.clone(),
                });
                Ok::<_, Error>(())
            })
            .collect();
        futures::stream::iter(downloads)
            .buffer_unordered(self.options.parallel)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(PulledImage {
            manifest,
            index,
            config,
            layers,
        })
    }

    async fn pull_blob(
        &self,
        ctx: &Ctx,
        repo: &Reference,
        blob: &BlobRef,
        sink: &dyn BlobSink,
        events: &Events<PullEvent>,
    ) -> Result<()> {
        let io = |source| Error::Io {
            operation: ctx.operation,
            target: ctx.target(),
            digest: blob.digest.clone(),
            source,
        };
        let writer = sink.write(&blob.digest).map_err(io)?;
        let progress = AtomicU64::new(0);
        let fetch = self.fetch_blob_sized(repo, &blob.digest, blob.size, writer, &progress);
        tokio::pin!(fetch);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let emit = |done| {
            events.emit(PullEvent::Progress {
                digest: blob.digest.clone(),
                done,
                total: blob.size,
            })
        };
        let (writer, n) = loop {
            tokio::select! {
                r = &mut fetch => break r?,
                _ = tick.tick() => emit(progress.load(Ordering::Relaxed)),
            }
        };
        emit(n);
        if n != blob.size {
            // The digest matched, so the descriptor's size is what is wrong.
            return Err(ctx.protocol(format!(
                "blob {} has {n} bytes, the manifest says {}",
                blob.digest, blob.size
            )));
        }
        // Commit on a blocking thread: it may fsync and rename.
        tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)
    }
}
