//! Parallel gzip in the manner of pigz: one standard gzip member, compressed in chunks on
//! several threads.
//!
//! The input is cut into fixed 1 MiB chunks. Each chunk is compressed as raw deflate by its
//! own compressor, primed with the previous chunk's last 32 KiB as dictionary (so matches may
//! still reach back across the cut), and ended with a sync flush (an empty stored block that
//! byte-aligns the stream); the last chunk ends the stream instead. Concatenated, the chunks
//! are one valid deflate stream (RFC 1951 §3.2.3 allows any number of non-final blocks), so
//! any single-member gzip reader accepts it. The bytes depend only on the input, the level
//! and the chunk size, never on the number of threads: digests are the same on every
//! machine.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::{self, JoinHandle};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input bytes per chunk.
const CHUNK: usize = 1 << 20;
/// deflate's window: how far back a match may reach (RFC 1951 §2).
const WINDOW: usize = 32 * 1024;
/// A fixed gzip header (RFC 1952 §2.3): deflate, no flags, mtime 0, no extra flags, OS
/// "unknown", so that the output is the same wherever it is made.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A gzip writer compressing on up to `threads` threads.
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    chunk: Vec<u8>,
    /// The last [`WINDOW`] bytes of the previous chunk.
    dict: Vec<u8>,
    crc: Crc,
    started: bool,
    pending: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(out: W, level: u32, threads: usize) -> Self {
        Self {
            out,
            level,
            threads: threads.max(1),
            chunk: Vec::with_capacity(CHUNK),
            dict: Vec::new(),
            crc: Crc::new(),
            started: false,
            pending: VecDeque::new(),
        }
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        // Trailer (RFC 1952 §2.3.1): CRC-32, then the input size modulo 2^32, little endian.
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Hands the current chunk to a thread.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&HEADER)?;
            self.started = true;
        }
        while self.pending.len() >= self.threads {
            self.write_oldest()?;
        }
        let input = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        self.crc.update(&input);
        let dict = std::mem::take(&mut self.dict);
        self.dict = input[input.len().saturating_sub(WINDOW)..].to_vec();
        let level = self.level;
        self.pending.push_back(thread::spawn(move || {
            compress_chunk(&input, &dict, level, last)
        }));
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(handle) = self.pending.pop_front() else {
            return Ok(());
        };
        let compressed = handle
            .join()
            .map_err(|_| io::Error::other("gzip worker thread panicked"))??;
        self.out.write_all(&compressed)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-stream would change the output; the data is written by `finish`.
        Ok(())
    }
}

/// Raw deflate of one chunk, primed with `dict`, ended by a sync flush or, for the last
/// chunk, the end of the stream.
fn compress_chunk(input: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    // Already-compressed or random data gains nothing from deflate (level 1 even grows it by
    // ~5%) and costs most of a layer's write time: such a chunk is stored. The choice depends
    // only on the chunk's bytes, so the output stays the same on every machine.
    let level = if incompressible(input) { 0 } else { level };
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() + input.len() / 16 + 64);
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = usize::try_from(c.total_in()).map_err(io::Error::other)? == input.len();
        // Done when the end was reached, or (sync flush) all input was taken and the
        // compressor stopped with room to spare, i.e. the flush is complete.
        if status == Status::StreamEnd || (!last && done_input && out.len() < out.capacity()) {
            return Ok(out);
        }
        out.reserve(64 * 1024);
    }
}

/// Whether a chunk's byte distribution is so close to uniform (order-0 entropy above 7.95 of
/// 8 bits per byte) that Huffman coding cannot shrink it. Small chunks are always compressed.
fn incompressible(input: &[u8]) -> bool {
    if input.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in input {
        counts[usize::from(b)] += 1;
    }
    let n = input.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.95
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        // Half text (compressible, with matches across chunk cuts), half xorshift noise.
        let mut v = b"layer tarballs: deterministic writer ".repeat(len / 74 + 1);
        v.truncate(len / 2);
        let mut s = 0x1234_5678_9abc_def0_u64;
        while v.len() < len {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v.push(s as u8);
        }
        v
    }

    fn gzip(input: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 1, threads);
        for part in input.chunks(write_size.max(1)) {
            g.write_all(part).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    fn random_chunks_are_stored_and_text_is_compressed() {
        let mut random = vec![0u8; 3 * CHUNK];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for b in &mut random {
            // xorshift: deterministic noise without a dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        assert!(incompressible(&random[..CHUNK]));
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .copied()
            .cycle()
            .take(CHUNK)
            .collect();
        assert!(!incompressible(&text));
        let g = gzip(&random, 2, 4096);
        // Stored blocks: a few bytes of framing per 64 KiB block, never deflate's 5% growth.
        assert!(
            g.len() < random.len() + random.len() / 100,
            "{} for {}",
            g.len(),
            random.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&g[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, random);
    }

    #[test]
    fn single_member_readers_get_everything_back() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12_345] {
            let input = data(len);
            let gz = gzip(&input, 3, 100_000);
            // `GzDecoder` stops after the first member: one member must hold everything.
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back.len(), input.len(), "len {len}");
            assert!(back == input, "len {len}");
        }
    }

    #[test]
    fn output_does_not_depend_on_threads_or_write_sizes() {
        let input = data(2 * CHUNK + 777);
        let a = gzip(&input, 1, 4096);
        assert_eq!(a, gzip(&input, 4, 1 << 20));
        assert_eq!(a, gzip(&input, 2, 512));
    }

    #[test]
    fn gnu_gzip_accepts_it() {
        let input = data(2 * CHUNK + 5);
        let gz = gzip(&input, 2, 65536);
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        assert!(out.stdout == input);
    }
}
