//! Blob operations: exists, download with digest check and resume, upload (streamed or
//! chunked), cross-repository mount, cancel.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt as _;
use http::StatusCode;
use rbuild_oci::{Digest, Reference, Sha256Writer};
use url::Url;

use crate::client::{Attempt, Client};
use crate::error::{Error, Result};
use crate::operation::Ctx;
use crate::request::{self, Access};
use crate::response;

/// Where the bytes of blobs come from when pushing (the store, an OCI layout, …).
///
/// `open` is called again when an upload restarts, so it must return a fresh reader from the
/// first byte each time. Readers are read on blocking threads, a bounded buffer at a time:
/// a layer is never held in memory.
pub trait BlobSource: Send + Sync {
    /// Opens the blob with this digest.
    ///
    /// # Errors
    ///
    /// The blob is missing or cannot be read.
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>>;
}

/// Where pulled blobs go.
pub trait BlobSink: Send + Sync {
    /// Whether the blob is already there (then it is not fetched).
    fn has(&self, digest: &Digest) -> bool;
    /// Starts writing the blob. The writer is committed only after the digest was verified;
    /// a writer dropped without commit must leave nothing behind.
    ///
    /// # Errors
    ///
    /// The sink cannot create the blob.
    fn write(&self, digest: &Digest) -> io::Result<Box<dyn BlobWriter>>;
}

/// A blob being written into a [`BlobSink`].
pub trait BlobWriter: Write + Send {
    /// Makes the (verified) blob visible.
    ///
    /// # Errors
    ///
    /// The sink could not persist it.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// What a mount request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOutcome {
    /// 201: the blob is now in the target repository.
    Mounted,
    /// 202: the registry opened an upload session instead (spec: "the registry MAY choose to
    /// fall back to a regular upload"); upload to this location.
    Session(Url),
}

/// Size of the buffers read from a [`BlobSource`] and sent to the network.
const READ_BUF: usize = 256 * 1024;

impl Client {
    /// `HEAD` the blob: its size when the repository has it, `None` when not.
    ///
    /// # Errors
    ///
    /// Auth, transport and unexpected status errors.
    pub async fn blob_exists(&self, repo: &Reference, digest: &Digest) -> Result<Option<u64>> {
        self.blob_exists_as("check blob in", repo, digest).await
    }

    pub(crate) async fn blob_exists_as(
        &self,
        operation: &'static str,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let ctx = Ctx::new(operation, repo);
        let ep = self.endpoint(repo)?;
        let resp = self
            .send(&ctx, Access::Pull, &[], true, &mut || {
                Ok(Attempt::bare(ep.head_blob(digest)))
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(response::content_length(resp.headers()).unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(ctx.status_error(resp, &format!("blob {digest}")).await),
        }
    }

    /// Asks the registry to mount `digest` from repository `from` (same registry) into `target`.
    ///
    /// # Errors
    ///
    /// Auth, transport and unexpected status errors.
    pub async fn mount_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        from: &str,
    ) -> Result<MountOutcome> {
        let ctx = Ctx::new("push to", target);
        let ep = self.endpoint(target)?;
        // Mounting needs pull on the source repository too (docker `blobs.Mount`).
        let extra = [Access::Pull.scope(from)];
        let resp = self
            .send(&ctx, Access::Push, &extra, true, &mut || {
                Ok(Attempt::bare(ep.mount_blob(digest, Some(from))))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => response::location(resp.headers(), ep.base())
                .map(MountOutcome::Session)
                .ok_or_else(|| ctx.protocol("202 to a mount without Location")),
            _ => Err(ctx.status_error(resp, &format!("blob {digest}")).await),
        }
    }

    /// Cancels an upload session (best effort cleanup after a failure).
    ///
    /// # Errors
    ///
    /// Transport errors; a status other than 2xx/404.
    pub async fn cancel_upload(&self, target: &Reference, location: &Url) -> Result<()> {
        let ctx = Ctx::new("cancel upload to", target);
        let resp = self
            .send(&ctx, Access::Push, &[], false, &mut || {
                Ok(Attempt::bare(request::cancel_upload(location)))
            })
            .await?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(ctx.status_error(resp, "upload session").await)
        }
    }

    /// Uploads the blob `digest` from `source` into `target`, streamed in one PATCH or in
    /// chunks ([`ClientOptions::chunk_size`](crate::ClientOptions::chunk_size)). `session`
    /// continues an upload a mount fell back to. Bytes sent are added to `progress`.
    ///
    /// A failed upload is cancelled and restarted from a new session (a half-written session
    /// cannot be trusted after a dropped connection) up to the retry limit.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] when the source's bytes do not hash to `digest`,
    /// [`Error::Io`] when the source cannot be read, auth/transport/status errors.
    pub async fn upload_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        source: &dyn BlobSource,
        session: Option<Url>,
        progress: &AtomicU64,
    ) -> Result<()> {
        let ctx = Ctx::new("push to", target);
        let mut session = session;
        let mut attempt = 0;
        loop {
            progress.store(0, Ordering::Relaxed);
            let (location, min_chunk) = match session.take() {
                Some(l) => (l, None),
                None => self.start_upload(&ctx, target).await?,
            };
            let result = match self.options.chunk_size {
                None => {
                    self.upload_streamed(&ctx, digest, source, location.clone(), progress)
                        .await
                }
                Some(size) => {
                    // Honour the registry's minimum chunk (all chunks but the last must be at
                    // least `OCI-Chunk-Min-Length`, distribution spec 1.1 "chunked upload").
                    let size = size.max(min_chunk.unwrap_or(0));
                    self.upload_chunked(&ctx, digest, source, location.clone(), size, progress)
                        .await
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let _ = self.cancel_upload(target, &location).await;
                    if attempt < self.options.max_retries && transient(&e) {
                        tracing::debug!(%digest, error = %e, "restarting upload");
                        tokio::time::sleep(self.options.retry_base * (attempt + 1)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Opens an upload session: its location and the registry's minimum chunk size.
    async fn start_upload(&self, ctx: &Ctx, target: &Reference) -> Result<(Url, Option<u64>)> {
        let ep = self.endpoint(target)?;
        let resp = self
            .send(ctx, Access::Push, &[], true, &mut || {
                Ok(Attempt::bare(ep.start_upload()))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(ctx.status_error(resp, "upload session").await);
        }
        let min_chunk = response::chunk_min_length(resp.headers());
        let location = response::location(resp.headers(), ep.base())
            .ok_or_else(|| ctx.protocol("upload session without Location"))?;
        Ok((location, min_chunk))
    }

    async fn upload_streamed(
        &self,
        ctx: &Ctx,
        digest: &Digest,
        source: &dyn BlobSource,
        location: Url,
        progress: &AtomicU64,
    ) -> Result<()> {
        let outcome: Arc<Mutex<Option<io::Result<Digest>>>> = Arc::default();
        let counter = Arc::new(AtomicU64::new(0));
        let resp = {
            let outcome = Arc::clone(&outcome);
            let counter = Arc::clone(&counter);
            let mut make = || {
                let reader = source.open(digest).map_err(|e| io_error(ctx, digest, e))?;
                Ok(Attempt {
                    request: request::patch_stream(&location),
                    body: Some(reader_body(
                        reader,
                        Arc::clone(&outcome),
                        Arc::clone(&counter),
                    )),
                })
            };
            let fut = self.send(ctx, Access::Push, &[], false, &mut make);
            with_progress(fut, &counter, progress).await?
        };
        let read = outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Err(e)) = read {
            return Err(io_error(ctx, digest, e));
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(ctx.status_error(resp, "upload session").await);
        }
        let next = response::location(resp.headers(), &location).unwrap_or(location);
        match read {
            Some(Ok(actual)) if &actual == digest => {}
            Some(Ok(actual)) => return Err(mismatch(ctx, digest, actual)),
            _ => return Err(ctx.protocol("the blob body was not fully sent")),
        }
        self.finish_upload(ctx, &next, digest).await
    }

    async fn upload_chunked(
        &self,
        ctx: &Ctx,
        digest: &Digest,
        source: &dyn BlobSource,
        mut location: Url,
        chunk: u64,
        progress: &AtomicU64,
    ) -> Result<()> {
        let mut reader = Some(source.open(digest).map_err(|e| io_error(ctx, digest, e))?);
        let mut hasher = Some(Sha256Writer::new(io::sink()));
        let mut offset = 0u64;
        loop {
            let (r, h, buf) = read_chunk(reader.take(), hasher.take(), chunk as usize)
                .await
                .map_err(|e| io_error(ctx, digest, e))?;
            reader = Some(r);
            hasher = Some(h);
            if buf.is_empty() {
                break;
            }
            let len = buf.len() as u64;
            let body = Bytes::from(buf);
            let loc = location.clone();
            let resp = self
                .send(ctx, Access::Push, &[], true, &mut || {
                    Ok(Attempt {
                        request: request::patch_chunk(&loc, offset, len),
                        body: Some(reqwest::Body::from(body.clone())),
                    })
                })
                .await?;
            match resp.status() {
                StatusCode::ACCEPTED => {
                    location = response::location(resp.headers(), &location).unwrap_or(location);
                    offset += len;
                    progress.store(offset, Ordering::Relaxed);
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // The session holds a different byte count than we think (spec: "416 …
                    // the client should GET the upload status and resume"). Re-read the source
                    // up to the registry's offset and continue from there.
                    let have = self.upload_status(ctx, &location).await?;
                    tracing::debug!(offset, have, "416 on chunk, resuming");
                    let fresh = source.open(digest).map_err(|e| io_error(ctx, digest, e))?;
                    let (r, h) = skip_to(fresh, have)
                        .await
                        .map_err(|e| io_error(ctx, digest, e))?;
                    reader = Some(r);
                    hasher = Some(h);
                    offset = have;
                    progress.store(offset, Ordering::Relaxed);
                }
                _ => return Err(ctx.status_error(resp, "upload session").await),
            }
        }
        let (_, actual, _) = hasher
            .ok_or_else(|| ctx.protocol("upload state lost"))?
            .finish();
        if &actual != digest {
            return Err(mismatch(ctx, digest, actual));
        }
        self.finish_upload(ctx, &location, digest).await
    }

    async fn upload_status(&self, ctx: &Ctx, location: &Url) -> Result<u64> {
        let resp = self
            .send(ctx, Access::Push, &[], true, &mut || {
                Ok(Attempt::bare(request::get(location.clone())))
            })
            .await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return Err(ctx.status_error(resp, "upload session").await);
        }
        Ok(response::uploaded_len(resp.headers()))
    }

    async fn finish_upload(&self, ctx: &Ctx, location: &Url, digest: &Digest) -> Result<()> {
        let resp = self
            .send(ctx, Access::Push, &[], true, &mut || {
                Ok(Attempt::bare(request::finish_upload(location, digest)))
            })
            .await?;
        if resp.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(ctx.status_error(resp, &format!("blob {digest}")).await)
        }
    }

    /// Downloads blob `digest` of `repo` into `out`, verifying the digest while streaming, and
    /// resuming with `Range` after a dropped connection. Returns the byte count. Bytes
    /// received are stored into `progress`.
    ///
    /// Prefer [`Client::fetch_blob_sized`] when a descriptor gives the size: without one, a
    /// registry can send an endless body into `out`.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] when the bytes do not match (nothing should be committed
    /// then), [`Error::Io`] when `out` fails, auth/transport/status errors.
    pub async fn fetch_blob<W: Write + Send + 'static>(
        &self,
        repo: &Reference,
        digest: &Digest,
        out: W,
        progress: &AtomicU64,
    ) -> Result<(W, u64)> {
        self.fetch_blob_limited(repo, digest, None, out, progress)
            .await
    }

    /// As [`Client::fetch_blob`] for a blob whose descriptor says it has `size` bytes: reading
    /// stops as soon as the registry has sent one byte more (or announces more in
    /// `Content-Length`), so a hostile or broken registry cannot fill the disk before the
    /// digest check. A shorter blob fails the digest check or, with a matching digest, is
    /// the caller's to compare with `size` (the returned count).
    ///
    /// # Errors
    ///
    /// [`Error::BlobTooLarge`] when the registry sends more than `size` bytes (nothing past
    /// `size` reaches `out`), otherwise as [`Client::fetch_blob`].
    pub async fn fetch_blob_sized<W: Write + Send + 'static>(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        out: W,
        progress: &AtomicU64,
    ) -> Result<(W, u64)> {
        self.fetch_blob_limited(repo, digest, Some(size), out, progress)
            .await
    }

    async fn fetch_blob_limited<W: Write + Send + 'static>(
        &self,
        repo: &Reference,
        digest: &Digest,
        limit: Option<u64>,
        out: W,
        progress: &AtomicU64,
    ) -> Result<(W, u64)> {
        let ctx = Ctx::new("pull", repo);
        let too_large = |size| Error::BlobTooLarge {
            operation: ctx.operation,
            target: ctx.target(),
            digest: digest.clone(),
            size,
        };
        let ep = self.endpoint(repo)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        // The sink is written and hashed on a blocking thread: file writes never stall the
        // runtime, and the channel bounds memory to a few network chunks.
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = Sha256Writer::new(out);
            for b in rx {
                w.write_all(&b)?;
            }
            w.flush()?;
            Ok::<_, io::Error>(w.finish())
        });
        let mut offset = 0u64;
        let mut attempt = 0u32;
        let result: Result<()> = async {
            loop {
                let resp = self
                    .send(&ctx, Access::Pull, &[], true, &mut || {
                        Ok(Attempt::bare(ep.get_blob(digest, offset)))
                    })
                    .await?;
                let status = resp.status();
                let mut skip = match status {
                    StatusCode::OK => offset,
                    // RFC 9110 §14.4: `Content-Range: bytes first-last/complete`. A server may
                    // start earlier than asked; never later.
                    StatusCode::PARTIAL_CONTENT => {
                        match response::content_range_start(resp.headers()) {
                            Some(start) if start <= offset => offset - start,
                            _ => {
                                return Err(ctx.protocol(format!(
                                    "blob {digest}: 206 answer does not start at or before byte {offset}"
                                )));
                            }
                        }
                    }
                    _ => return Err(ctx.status_error(resp, &format!("blob {digest}")).await),
                };
                // A body announced longer than what is left of the blob fails before a byte.
                if let (Some(size), Some(len)) = (limit, resp.content_length())
                    && offset.saturating_add(len.saturating_sub(skip)) > size
                {
                    return Err(too_large(size));
                }
                let mut stream = resp.bytes_stream();
                let mut broken = None;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(mut b) => {
                            // A registry that ignores `Range` resends from byte 0.
                            if skip > 0 {
                                let n = skip.min(b.len() as u64);
                                skip -= n;
                                b = b.slice(n as usize..);
                            }
                            if b.is_empty() {
                                continue;
                            }
                            // Checked per chunk, before writing: the byte after `size` ends the
                            // download, whatever Content-Length said (or did not say).
                            if let Some(size) = limit
                                && offset + b.len() as u64 > size
                            {
                                return Err(too_large(size));
                            }
                            offset += b.len() as u64;
                            progress.store(offset, Ordering::Relaxed);
                            if tx.send(b).is_err() {
                                return Ok(()); // the writer failed; its error is reported below
                            }
                        }
                        Err(e) => {
                            broken = Some(e);
                            break;
                        }
                    }
                }
                match broken {
                    None => return Ok(()),
                    Some(e) if attempt < self.options.max_retries => {
                        tracing::debug!(%digest, offset, error = %e, "resuming blob download");
                        tokio::time::sleep(self.options.retry_base * (attempt + 1)).await;
                        attempt += 1;
                    }
                    Some(e) => return Err(ctx.http(e)),
                }
            }
        }
        .await;
        drop(tx);
        let written = writer
            .await
            .map_err(|e| io_error(&ctx, digest, io::Error::other(e)))?;
        result?;
        let (out, actual, n) = written.map_err(|e| io_error(&ctx, digest, e))?;
        if &actual != digest {
            return Err(mismatch(&ctx, digest, actual));
        }
        Ok((out, n))
    }
}

/// Whether restarting an upload can help.
fn transient(e: &Error) -> bool {
    match e {
        Error::Http { .. } => true,
        Error::Status { status, .. } => {
            status.is_server_error()
                || *status == StatusCode::REQUEST_TIMEOUT
                || *status == StatusCode::TOO_MANY_REQUESTS
        }
        _ => false,
    }
}

fn io_error(ctx: &Ctx, digest: &Digest, source: io::Error) -> Error {
    Error::Io {
        operation: ctx.operation,
        target: ctx.target(),
        digest: digest.clone(),
        source,
    }
}

fn mismatch(ctx: &Ctx, expected: &Digest, actual: Digest) -> Error {
    Error::DigestMismatch {
        operation: ctx.operation,
        target: ctx.target(),
        expected: expected.clone(),
        actual,
    }
}

/// Runs `fut`, copying `counter` into `progress` while it runs.
async fn with_progress<T>(
    fut: impl std::future::Future<Output = T>,
    counter: &AtomicU64,
    progress: &AtomicU64,
) -> T {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut fut => {
                progress.store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
                return out;
            }
            _ = tick.tick() => progress.store(counter.load(Ordering::Relaxed), Ordering::Relaxed),
        }
    }
}

/// A streaming request body fed by a blocking thread reading `reader`: at most a few
/// [`READ_BUF`] buffers are in flight. The digest of what was read (or the read error) is put
/// into `outcome` when the reader is exhausted.
fn reader_body(
    mut reader: Box<dyn Read + Send>,
    outcome: Arc<Mutex<Option<io::Result<Digest>>>>,
    counter: Arc<AtomicU64>,
) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    counter.store(0, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256Writer::new(io::sink());
        loop {
            let mut buf = vec![0u8; READ_BUF];
            match reader.read(&mut buf) {
                Ok(0) => {
                    let (_, d, _) = hasher.finish();
                    *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(d));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    let _ = hasher.write_all(&buf);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // the request was dropped
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(e));
                    let _ = tx.blocking_send(Err(copy));
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    reqwest::Body::wrap_stream(stream)
}

type Reader = Box<dyn Read + Send>;
type Hasher = Sha256Writer<io::Sink>;

/// Reads up to `size` bytes on a blocking thread (fewer only at the end of the blob).
async fn read_chunk(
    reader: Option<Reader>,
    hasher: Option<Hasher>,
    size: usize,
) -> io::Result<(Reader, Hasher, Vec<u8>)> {
    let (Some(mut reader), Some(mut hasher)) = (reader, hasher) else {
        return Err(io::Error::other("upload reader lost"));
    };
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(size.min(64 << 20));
        (&mut reader).take(size as u64).read_to_end(&mut buf)?;
        hasher.write_all(&buf)?;
        Ok((reader, hasher, buf))
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads and hashes the first `n` bytes of a fresh reader.
async fn skip_to(mut reader: Reader, n: u64) -> io::Result<(Reader, Hasher)> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256Writer::new(io::sink());
        let copied = io::copy(&mut (&mut reader).take(n), &mut hasher)?;
        if copied != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob shorter than the registry's upload",
            ));
        }
        Ok((reader, hasher))
    })
    .await
    .map_err(io::Error::other)?
}
