//! ADD's local archives: recognised by content (docker's rule, not the file name) and extracted
//! through the layer crate's safe apply, so no entry lands outside the destination.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// Compression of an archive, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn sniff(head: &[u8]) -> Kind {
    match head {
        [0x1f, 0x8b, ..] => Kind::Gzip,
        [b'B', b'Z', b'h', ..] => Kind::Bzip2,
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Kind::Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Kind::Zstd,
        _ => Kind::Plain,
    }
}

fn decoder(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut f = File::open(path)?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head)?;
    let f = BufReader::new(File::open(path)?);
    Ok(match sniff(&head[..n]) {
        Kind::Plain => Box::new(f),
        Kind::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Kind::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        Kind::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(f)),
        Kind::Zstd => Box::new(zstd::stream::read::Decoder::new(f)?),
    })
}

/// Whether `path` is a tar archive, plain or compressed: its (decompressed) first block is a
/// tar header (`ustar` magic at offset 257, or a valid old-style header checksum).
pub(crate) fn is_archive(path: &Path) -> bool {
    let Ok(mut r) = decoder(path) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut block[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    // Old (v7) tar: the checksum field must match the header's byte sum.
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    block[0] != 0 && stored == Some(sum)
}

/// Whether the open file `f` is a tar archive (see [`is_archive`]); read through the
/// descriptor, so the name it was opened by cannot be swapped in between.
pub(crate) fn is_archive_file(f: File) -> bool {
    use std::os::fd::AsRawFd;
    is_archive(Path::new(&format!("/proc/self/fd/{}", f.as_raw_fd())))
}

/// Extracts the archive at `path` into `dest`.
///
/// # Errors
///
/// IO errors and entries the safe apply refuses (paths outside `dest`).
pub(crate) fn extract(path: &Path, dest: &Path) -> io::Result<()> {
    let r = decoder(path)?;
    rbuild_layer::apply_layer(r, dest).map_err(io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_archives_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("a.bin");
        {
            let f = File::create(&tar_path).unwrap();
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            let mut h = tar::Header::new_ustar();
            h.set_size(2);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "x.txt", &b"hi"[..]).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        assert!(is_archive(&tar_path));
        let txt = dir.path().join("plain.tar.gz");
        std::fs::write(&txt, "not an archive at all").unwrap();
        assert!(!is_archive(&txt));
    }
}
