//! User and group resolution from the rootfs's `/etc/passwd` and `/etc/group`.
//!
//! This runs in the sandbox child after `pivot_root` (so it reads the image's files, with
//! symlinks resolved inside the image, like runc's `GetExecUser`), after `fork` in a
//! multi-threaded process: nothing here allocates. The files are read into buffers that the
//! parent allocated before forking, and parsed as byte slices.

/// Why a user spec could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserError {
    /// A user name with no line in `/etc/passwd`.
    UnknownUser,
    /// A group name with no line in `/etc/group`.
    UnknownGroup,
    /// More supplementary groups than the buffer holds.
    TooManyGroups,
}

/// Resolved credentials; the supplementary groups are the first `ngroups` of the caller's
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub ngroups: usize,
}

/// Splits `user[:group]`; `None` (no user given) is root, as in docker.
pub(crate) fn split_spec(spec: Option<&str>) -> (Vec<u8>, Option<Vec<u8>>) {
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => (b"0".to_vec(), None),
        Some(spec) => match spec.split_once(':') {
            Some((user, group)) => (user.as_bytes().to_vec(), Some(group.as_bytes().to_vec())),
            None => (spec.as_bytes().to_vec(), None),
        },
    }
}

/// Resolves `user` (and `group`) against the contents of `/etc/passwd` and `/etc/group`
/// (`None` when the file does not exist), filling `groups` with the supplementary gids.
///
/// Follows runc's `libcontainer/user.GetExecUser`: a numeric uid missing from passwd is used as
/// is with gid 0; a name must exist; an explicit group replaces the primary gid and means no other
/// supplementary groups; otherwise the supplementary groups are those of `/etc/group` that list
/// the user's name as a member. The primary gid is added to the supplementary groups, as
/// docker's and BuildKit's steps have it.
pub(crate) fn resolve(
    user: &[u8],
    group: Option<&[u8]>,
    passwd: Option<&[u8]>,
    group_file: Option<&[u8]>,
    groups: &mut [u32],
) -> Result<Ids, UserError> {
    let numeric = parse_id(user);
    let entry = passwd.and_then(|p| {
        lines(p).find(|fields| match numeric {
            Some(uid) => field(fields, 2).and_then(parse_id) == Some(uid),
            None => field(fields, 0) == Some(user),
        })
    });
    let (uid, mut gid, name) = match (numeric, entry) {
        (_, Some(fields)) => {
            let uid = field(fields, 2).and_then(parse_id);
            let gid = field(fields, 3).and_then(parse_id).unwrap_or(0);
            match uid {
                Some(uid) => (uid, gid, field(fields, 0)),
                None => return Err(UserError::UnknownUser),
            }
        }
        (Some(uid), None) => (uid, 0, None),
        (None, None) => return Err(UserError::UnknownUser),
    };
    let mut ngroups = 0;
    match group {
        Some(group) => {
            gid = match parse_id(group) {
                Some(gid) => gid,
                None => group_file
                    .and_then(|g| lines(g).find(|f| field(f, 0) == Some(group)))
                    .and_then(|f| field(f, 2).and_then(parse_id))
                    .ok_or(UserError::UnknownGroup)?,
            };
        }
        None => {
            if let (Some(name), Some(group_file)) = (name, group_file) {
                for fields in lines(group_file) {
                    let member = field(fields, 3).is_some_and(|members| {
                        members.split(|&b| b == b',').any(|m| trim(m) == name)
                    });
                    let Some(id) = field(fields, 2).and_then(parse_id) else {
                        continue;
                    };
                    if member && !groups[..ngroups].contains(&id) {
                        *groups.get_mut(ngroups).ok_or(UserError::TooManyGroups)? = id;
                        ngroups += 1;
                    }
                }
            }
        }
    }
    // docker and BuildKit run a step with its primary group among its supplementary groups
    // too (`id` shows `groups=0(root)` for root, `groups=1000(app),…` for app).
    if !groups[..ngroups].contains(&gid) {
        *groups.get_mut(ngroups).ok_or(UserError::TooManyGroups)? = gid;
        ngroups += 1;
    }
    Ok(Ids { uid, gid, ngroups })
}

/// The non-empty, non-comment lines of a colon-separated database, as the whole line (fields
/// are taken with [`field`]).
fn lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    content
        .split(|&b| b == b'\n')
        .map(trim)
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
}

/// The `n`th colon-separated field of a line.
fn field(line: &[u8], n: usize) -> Option<&[u8]> {
    line.split(|&b| b == b':').nth(n).map(trim)
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// A decimal id (what `strconv.Atoi` accepts for ids in runc, without a sign).
fn parse_id(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &[u8] = b"root:x:0:\n\
        wheel:x:10:root,app\n\
        app:x:1000:\n\
        audio:x:29:daemon, app\n\
        staff:x:50:\n";

    fn run(user: &str, group: Option<&str>) -> Result<(Ids, Vec<u32>), UserError> {
        let mut buf = [0u32; 8];
        let ids = resolve(
            user.as_bytes(),
            group.map(str::as_bytes),
            Some(PASSWD),
            Some(GROUP),
            &mut buf,
        )?;
        Ok((ids, buf[..ids.ngroups].to_vec()))
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let (ids, groups) = run("app", None).unwrap();
        assert_eq!((ids.uid, ids.gid), (1000, 1000));
        assert_eq!(groups, vec![10, 29, 1000]);
    }

    #[test]
    fn numeric_uid_in_passwd_uses_its_name_for_groups() {
        let (ids, groups) = run("0", None).unwrap();
        assert_eq!((ids.uid, ids.gid), (0, 0));
        assert_eq!(groups, vec![10, 0]);
    }

    #[test]
    fn numeric_uid_missing_from_passwd_gets_gid_zero() {
        let (ids, groups) = run("4242", None).unwrap();
        assert_eq!((ids.uid, ids.gid), (4242, 0));
        assert_eq!(groups, vec![0]);
    }

    #[test]
    fn explicit_group_by_name_or_number_replaces_supplementary_groups() {
        let (ids, groups) = run("app", Some("staff")).unwrap();
        assert_eq!((ids.uid, ids.gid), (1000, 50));
        assert_eq!(groups, vec![50]);
        let (ids, _) = run("1000", Some("7")).unwrap();
        assert_eq!((ids.uid, ids.gid), (1000, 7));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(run("nobody", None), Err(UserError::UnknownUser));
        assert_eq!(run("app", Some("nogroup")), Err(UserError::UnknownGroup));
    }

    #[test]
    fn missing_files_allow_numeric_ids_only() {
        let mut buf = [0u32; 1];
        let ids = resolve(b"5", Some(b"6"), None, None, &mut buf).unwrap();
        assert_eq!((ids.uid, ids.gid, ids.ngroups), (5, 6, 1));
        assert_eq!(
            resolve(b"app", None, None, None, &mut buf),
            Err(UserError::UnknownUser)
        );
    }

    #[test]
    fn too_many_groups_is_reported() {
        let mut buf = [0u32; 1];
        assert_eq!(
            resolve(b"app", None, Some(PASSWD), Some(GROUP), &mut buf),
            Err(UserError::TooManyGroups)
        );
    }

    #[test]
    fn split_spec_defaults_to_root() {
        assert_eq!(split_spec(None), (b"0".to_vec(), None));
        assert_eq!(split_spec(Some("app")), (b"app".to_vec(), None));
        assert_eq!(
            split_spec(Some("1:2")),
            (b"1".to_vec(), Some(b"2".to_vec()))
        );
    }

    #[test]
    fn parse_id_rejects_signs_and_overflow() {
        assert_eq!(parse_id(b"42"), Some(42));
        assert_eq!(parse_id(b"-1"), None);
        assert_eq!(parse_id(b"99999999999"), None);
        assert_eq!(parse_id(b""), None);
    }
}
