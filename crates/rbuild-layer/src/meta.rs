//! Entry metadata: reading it from ustar headers and PAX records, applying it to files.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;

use nix::sys::time::TimeSpec;

use crate::write::is_overlay_xattr;
use crate::{Error, Result};

/// Metadata of an entry, from its ustar header and PAX records.
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: TimeSpec,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A failed chown to `uid:gid`: names the ids, and says when they do not exist in this user
/// namespace (a rootless build whose ranges do not cover the image's owners).
pub(crate) fn owner_io_error(uid: u32, gid: u32, source: io::Error) -> io::Error {
    let text = if source.raw_os_error() == Some(libc::EINVAL) {
        format!(
            "cannot give it owner {uid}:{gid}: the id is not mapped in this user namespace (a \
             rootless build needs /etc/subuid and /etc/subgid ranges covering the image's \
             owners; see `rbuild info`)"
        )
    } else {
        format!("cannot give it owner {uid}:{gid}: {source}")
    };
    io::Error::new(source.kind(), text)
}

/// chown, then chmod (chown clears setuid/setgid), then xattrs (chown also drops
/// `security.capability`), on an open file or directory.
pub(crate) fn apply_fd_meta(file: &File, meta: &Meta) -> io::Result<()> {
    use xattr::FileExt as _;
    std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))
        .map_err(|e| owner_io_error(meta.uid, meta.gid, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode))?;
    for (k, v) in &meta.xattrs {
        set_xattr_tolerant(|| file.set_xattr(k, v))?;
    }
    Ok(())
}

/// Runs an xattr write, ignoring "not supported" (the target filesystem has no xattrs).
pub(crate) fn set_xattr_tolerant(f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    match f() {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(()),
        r => r,
    }
}

/// As [`set_xattr_tolerant`], also ignoring `EPERM`: Linux forbids `user.*` xattrs on
/// symlinks and device nodes (`xattr(7)`), so such records cannot be honoured there.
pub(crate) fn set_node_xattr_tolerant(f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    match f() {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        r => set_xattr_tolerant(|| r),
    }
}

/// Reads mode, owner, mtime and xattrs of `entry`; PAX `uid`, `gid`, `mtime` override the
/// ustar fields, `SCHILY.xattr.*` records (GNU tar, Go, bsdtar) give the xattrs.
pub(crate) fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta> {
    let bad = |what: &str| Error::ReadBlob {
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("entry `{name}` has an invalid {what} field"),
        ),
    };
    let h = entry.header();
    let old = h.as_old();
    let mut meta = Meta {
        // Permission, setuid/setgid and sticky bits only; the file type comes from the entry type.
        mode: numeric(&old.mode, h.mode().map(u64::from))
            .and_then(|v| u32::try_from(v & 0o7777).ok())
            .ok_or_else(|| bad("mode"))?,
        uid: numeric(&old.uid, h.uid())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("uid"))?,
        gid: numeric(&old.gid, h.gid())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("gid"))?,
        mtime: TimeSpec::new(
            numeric(&old.mtime, h.mtime())
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| bad("mtime"))?,
            0,
        ),
        xattrs: Vec::new(),
    };
    let Some(pax) = entry
        .pax_extensions()
        .map_err(|source| Error::ReadBlob { source })?
    else {
        return Ok(meta);
    };
    for ext in pax {
        let ext = ext.map_err(|source| Error::ReadBlob { source })?;
        let Ok(key) = ext.key() else { continue };
        let value = ext.value_bytes();
        match key {
            "uid" => meta.uid = parse_num(value).ok_or_else(|| bad("PAX uid"))?,
            "gid" => meta.gid = parse_num(value).ok_or_else(|| bad("PAX gid"))?,
            "mtime" => meta.mtime = parse_pax_time(value).ok_or_else(|| bad("PAX mtime"))?,
            k => {
                if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                    // overlayfs' private xattrs are never layer content; honouring them would
                    // let a layer forge opaque markers or redirects.
                    if !is_overlay_xattr(x) {
                        meta.xattrs.push((x.to_owned(), value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// A numeric header field; an empty one (all NUL or spaces) reads as 0, as Go's
/// `archive/tar` and GNU tar read it.
fn numeric(raw: &[u8], parsed: io::Result<u64>) -> Option<u64> {
    if raw.iter().all(|&b| b == 0 || b == b' ') {
        return Some(0);
    }
    parsed.ok()
}

fn parse_num(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nanos = format!("{digits:0<9}").parse().ok()?;
        if secs < 0 || s.starts_with('-') {
            nanos = -nanos;
        }
    }
    Some(TimeSpec::new(secs, 0) + TimeSpec::new(0, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_numeric_fields_read_as_zero() {
        assert_eq!(numeric(&[0; 8], Err(io::Error::other("x"))), Some(0));
        assert_eq!(numeric(b"       \0", Err(io::Error::other("x"))), Some(0));
        assert_eq!(numeric(b"0000017\0", Ok(15)), Some(15));
        assert_eq!(numeric(b"zz\0\0\0\0\0\0", Err(io::Error::other("x"))), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(TimeSpec::new(12, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
