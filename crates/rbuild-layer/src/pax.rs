//! Tar header encoding: ustar fields, with PAX extended headers for what does not fit.
//!
//! POSIX.1-2001 `pax` format (IEEE Std 1003.1, "pax Interchange Format"): a `x` entry before the
//! real header carries `"<len> <key>=<value>\n"` records overriding the ustar fields. Go's
//! `archive/tar` (docker, buildah) writes the same; GNU tar, bsdtar and every runtime read it.

use std::collections::BTreeMap;
use std::io::{self, Write};

use tar::{EntryType, Header};

/// Largest value of an 8-byte octal ustar field (uid, gid, mode): 7 octal digits.
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal ustar field (size, mtime): 11 octal digits.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// One tar entry before encoding.
pub(crate) struct EntryHeader<'a> {
    /// Path inside the archive; directories end with `/`.
    pub path: &'a [u8],
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub link: Option<&'a [u8]>,
    pub device: Option<(u32, u32)>,
    /// Extended attributes, sorted by name (BTreeMap) for deterministic output.
    pub xattrs: &'a BTreeMap<String, Vec<u8>>,
}

/// Writes the header blocks of `e` (a PAX header first when needed) to `out`.
pub(crate) fn write_header<W: Write>(out: &mut W, e: &EntryHeader<'_>) -> io::Result<()> {
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut h = Header::new_ustar();
    h.set_entry_type(e.kind);
    h.set_mode(e.mode);
    if e.uid > MAX_OCTAL_8 {
        pax.insert("uid".into(), e.uid.to_string().into_bytes());
    }
    if e.gid > MAX_OCTAL_8 {
        pax.insert("gid".into(), e.gid.to_string().into_bytes());
    }
    // Large values also go into the ustar field (the tar crate then uses GNU base-256), so that
    // readers ignoring PAX still get something sensible.
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    if e.size > MAX_OCTAL_12 {
        pax.insert("size".into(), e.size.to_string().into_bytes());
    }
    h.set_size(e.size);
    match u64::try_from(e.mtime) {
        Ok(m) if m <= MAX_OCTAL_12 => h.set_mtime(m),
        _ => {
            pax.insert("mtime".into(), e.mtime.to_string().into_bytes());
            h.set_mtime(0);
        }
    }
    if !set_ustar_path(&mut h, e.path) {
        pax.insert("path".into(), e.path.to_vec());
        set_truncated_name(&mut h, e.path);
    }
    if let Some(link) = e.link {
        if link.len() <= 100 {
            h.set_link_name_literal(link)?;
        } else {
            pax.insert("linkpath".into(), link.to_vec());
            h.as_old_mut().linkname.copy_from_slice(&link[..100]);
        }
    }
    if let Some((major, minor)) = e.device {
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }
    for (name, value) in e.xattrs {
        pax.insert(format!("SCHILY.xattr.{name}"), value.clone());
    }
    h.set_cksum();

    if !pax.is_empty() {
        let body = encode_records(&pax);
        let mut ph = Header::new_ustar();
        ph.set_entry_type(EntryType::XHeader);
        ph.set_mode(0o644);
        ph.set_size(body.len() as u64);
        // Go's archive/tar names it `<dir>/PaxHeaders.0/<file>`; GNU tar puts its pid there,
        // which would make the output differ between runs.
        let name = pax_header_name(e.path);
        set_truncated_name(&mut ph, &name);
        ph.set_cksum();
        out.write_all(ph.as_bytes())?;
        out.write_all(&body)?;
        write_padding(out, body.len() as u64)?;
    }
    out.write_all(h.as_bytes())
}

/// Writes the zero bytes that round `len` up to the 512-byte block size.
pub(crate) fn write_padding<W: Write>(out: &mut W, len: u64) -> io::Result<()> {
    let rem = (len % 512) as usize;
    if rem != 0 {
        out.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
}

/// Encodes PAX records: each is `"<len> <key>=<value>\n"` where `<len>` counts the whole record,
/// its own digits included.
pub(crate) fn encode_records(records: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let base = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
        let mut len = base + digits(base);
        if digits(len) != digits(base) {
            len = base + digits(len);
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// Puts `path` in the ustar `name` (100 bytes) or splits it at a `/` into `prefix` (155) and
/// `name`. Returns false when it fits neither way.
fn set_ustar_path(h: &mut Header, path: &[u8]) -> bool {
    let Some(ustar) = h.as_ustar_mut() else {
        return false;
    };
    if path.len() <= 100 {
        ustar.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // The split must leave a non-empty name of at most 100 bytes and a prefix of at most 155.
    let search_end = path.len().saturating_sub(1).min(155);
    for i in (0..=search_end).rev() {
        if path[i] == b'/' && i > 0 && path.len() - i - 1 <= 100 && path.len() - i - 1 > 0 {
            ustar.prefix[..i].copy_from_slice(&path[..i]);
            let rest = &path[i + 1..];
            ustar.name[..rest.len()].copy_from_slice(rest);
            return true;
        }
    }
    false
}

fn set_truncated_name(h: &mut Header, path: &[u8]) {
    let n = path.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&path[..n]);
}

fn pax_header_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, file) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut name = dir.to_vec();
    name.extend_from_slice(b"PaxHeaders.0/");
    name.extend_from_slice(file);
    name
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn record_length_counts_its_own_digits() {
        let mut m = BTreeMap::new();
        m.insert("path".to_string(), b"a".to_vec());
        // " path=a\n" is 8 bytes, plus 1 digit = 9.
        assert_eq!(encode_records(&m), b"9 path=a\n");
        let mut m = BTreeMap::new();
        // base 99 → 101 with 3 digits (a 2-digit length would be 101, which has 3 digits).
        m.insert("k".to_string(), vec![b'x'; 95]);
        let rec = encode_records(&m);
        assert_eq!(rec.len(), 102);
        assert!(rec.starts_with(b"102 k="));
    }

    fn roundtrip(e: &EntryHeader<'_>) -> (Vec<u8>, Option<Vec<u8>>, u64, u64) {
        let mut buf = Vec::new();
        write_header(&mut buf, e).unwrap();
        buf.extend_from_slice(&[0u8; 1024]);
        let mut ar = tar::Archive::new(&buf[..]);
        let mut entries = ar.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        (
            entry.path_bytes().into_owned(),
            entry.link_name_bytes().map(|c| c.into_owned()),
            entry.header().uid().unwrap(),
            entry.header().mtime().unwrap(),
        )
    }

    #[test]
    fn long_paths_and_links_survive_through_pax_or_prefix() {
        let xattrs = BTreeMap::new();
        let long_dir = "d".repeat(120);
        for path in [
            "short".to_string(),
            format!("{long_dir}/file"),
            format!("{}/{}", "a".repeat(50), "b".repeat(120)),
            "c".repeat(300),
        ] {
            let link = "t".repeat(150);
            let e = EntryHeader {
                path: path.as_bytes(),
                kind: EntryType::Symlink,
                mode: 0o777,
                uid: 3_000_000,
                gid: 0,
                size: 0,
                mtime: 1_700_000_000,
                link: Some(link.as_bytes()),
                device: None,
                xattrs: &xattrs,
            };
            let (p, l, uid, mtime) = roundtrip(&e);
            assert_eq!(p, path.as_bytes());
            assert_eq!(l.as_deref(), Some(link.as_bytes()));
            assert_eq!(uid, 3_000_000);
            assert_eq!(mtime, 1_700_000_000);
        }
    }

    #[test]
    fn pax_header_name_is_go_style() {
        assert_eq!(pax_header_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name(b"dir/"), b"PaxHeaders.0/dir");
    }
}
