//! The sandbox's mounts: kernel filesystems, bind mounts, `pivot_root`, and the loopback
//! interface of a new network namespace. Runs in pid 1 of the sandbox, after `fork`.
#![expect(
    unsafe_code,
    reason = "mount/openat2/pivot_root are FFI calls; each block says why it is sound"
)]

use std::ffi::{CStr, c_char, c_int};
use std::os::fd::RawFd;

use super::{Failure, Step, check, close, errno};
use crate::plan::Plan;

/// Host devices bind-mounted into the sandbox's `/dev` (the OCI runtime spec's default
/// devices, minus `console`). The index of a [`Step::MakeDevice`] failure points here.
pub(crate) const DEVICES: [&CStr; 6] = [c"null", c"zero", c"full", c"random", c"urandom", c"tty"];
const HOST_DEVICES: [&CStr; 6] = [
    c"/dev/null",
    c"/dev/zero",
    c"/dev/full",
    c"/dev/random",
    c"/dev/urandom",
    c"/dev/tty",
];
/// `/dev/fd`, `/dev/stdin`… symlinks, as in the OCI runtime spec ("Default Devices").
const DEV_SYMLINKS: [(&CStr, &CStr); 5] = [
    (c"/proc/self/fd", c"fd"),
    (c"/proc/self/fd/0", c"stdin"),
    (c"/proc/self/fd/1", c"stdout"),
    (c"/proc/self/fd/2", c"stderr"),
    (c"pts/ptmx", c"ptmx"),
];

/// `/proc/self/fd/<fd><suffix>` in a stack buffer: mounting through the magic link of a
/// descriptor opened with `RESOLVE_IN_ROOT` is how runc keeps mount targets inside the rootfs
/// (CVE-2019-19921 class of symlink races).
struct FdPath {
    buf: [u8; 128],
}

impl FdPath {
    fn new(fd: RawFd, suffix: &CStr) -> FdPath {
        let mut buf = [0u8; 128];
        let prefix = b"/proc/self/fd/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut len = prefix.len();
        let mut digits = [0u8; 10];
        let mut n = fd.unsigned_abs();
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in digits[..count].iter().rev() {
            buf[len] = *d;
            len += 1;
        }
        let suffix = suffix.to_bytes();
        let room = buf.len() - len - 1;
        let take = suffix.len().min(room);
        buf[len..len + take].copy_from_slice(&suffix[..take]);
        FdPath { buf }
    }

    fn as_ptr(&self) -> *const c_char {
        self.buf.as_ptr().cast()
    }
}

/// `openat2(dirfd, path, flags, RESOLVE_IN_ROOT)`: `path` resolved as if `dirfd` were `/`, so
/// an image's absolute or `..` symlinks cannot point a mount at the host.
fn open_in_root(dirfd: RawFd, path: &CStr, flags: c_int) -> Result<RawFd, i32> {
    // SAFETY: open_how is a plain C struct; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd as RawFd)
    }
}

/// The flags of the mount at `path` that a remount must repeat: inside a user namespace
/// the kernel locks `nosuid`, `nodev`, `noexec` and the atime flags of mounts that came from
/// the parent namespace, and refuses a remount that would clear them (runc's
/// `getUnprivilegedMountFlags`). Zero when `statvfs` fails (the remount then reports).
pub(super) fn kept_flags(path: *const c_char) -> libc::c_ulong {
    // SAFETY: statvfs is a plain C struct of integers; all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a live out pointer.
    if unsafe { libc::statvfs(path, &mut st) } != 0 {
        return 0;
    }
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms)
}

pub(super) fn mount(
    source: *const c_char,
    target: *const c_char,
    fstype: *const c_char,
    flags: libc::c_ulong,
    data: *const c_char,
) -> c_int {
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    unsafe { libc::mount(source, target, fstype, flags, data.cast()) }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Mounts each `(source, target)` of `plan.idmaps` (relative to the current directory, the
/// scratch directory) as a clone of `source` idmapped with the user namespace `userns`: a file
/// owned by id N on disk shows as the namespace's N, and one created by the namespace's N is
/// stored as N, so the layers keep the image's ids (mount_setattr(2), `MOUNT_ATTR_IDMAP`).
pub(super) fn idmap_layers(plan: &Plan, userns: RawFd) -> Result<(), Failure> {
    for (i, (source, target)) in plan.idmaps.iter().enumerate() {
        let index = i as u32;
        let tree = check(
            // SAFETY: open_tree(2) reads a NUL-terminated path; the descriptor is ours.
            unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    source.as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
                ) as c_int
            },
            Step::IdmapLayer,
            index,
        )?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns as u64,
        };
        check(
            // SAFETY: mount_setattr(2) reads `attr`, a live struct of the size passed, and an
            // empty NUL-terminated path naming the descriptor itself.
            unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    tree,
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                ) as c_int
            },
            Step::IdmapLayer,
            index,
        )?;
        check(
            // SAFETY: move_mount(2) attaches the detached tree `tree` at the NUL-terminated
            // `target`, a directory the plan created in the scratch directory.
            unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) as c_int
            },
            Step::IdmapLayer,
            index,
        )?;
        close(tree);
    }
    Ok(())
}

/// The bind mounts of the plan (`/etc/hosts`… then the build mounts), each target resolved
/// inside the rootfs.
pub(super) fn bind_mounts(root: RawFd, plan: &Plan) -> Result<(), Failure> {
    for (i, bind) in plan.binds.iter().enumerate() {
        let index = i as u32;
        let fail = |step, errno| Failure { step, index, errno };
        let target = match open_in_root(root, &bind.target, libc::O_PATH) {
            Ok(fd) => fd,
            Err(libc::ENOENT) if bind.optional => continue,
            Err(errno) => return Err(fail(Step::OpenBindTarget, errno)),
        };
        let path = FdPath::new(target, c"");
        check(
            mount(
                bind.source.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
            Step::Bind,
            index,
        )?;
        close(target);
        if bind.readonly {
            // MS_RDONLY is ignored on the initial bind (mount(2) "Creating a bind mount");
            // remount the new mount, reached by resolving the target again.
            let top = open_in_root(root, &bind.target, libc::O_PATH)
                .map_err(|errno| fail(Step::RemountReadonly, errno))?;
            let path = FdPath::new(top, c"");
            check(
                mount(
                    std::ptr::null(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | kept_flags(path.as_ptr()),
                    std::ptr::null(),
                ),
                Step::RemountReadonly,
                index,
            )?;
            close(top);
        }
    }
    Ok(())
}

/// Brings up `lo` in a new network namespace (it starts down), with `SIOCSIFFLAGS` like
/// `ip link set lo up`.
pub(super) fn loopback_up() -> Result<(), Failure> {
    let fail = || Failure {
        step: Step::Loopback,
        index: 0,
        errno: errno(),
    };
    // SAFETY: socket(2) takes integer arguments; the descriptor it returns is owned here and
    // closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(fail());
    }
    // SAFETY: `ifreq` is a plain C struct (names and integer unions) for which all-zero bytes
    // are a valid value: an empty name and zero flags.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as c_char;
    ifr.ifr_name[1] = b'o' as c_char;
    // SAFETY: SIOCGIFFLAGS writes the interface's flags into the `ifreq` we pass, which is
    // live and writable for the call (netdevice(7)).
    if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(fail());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel initialised `ifru_flags`, the union field
    // that SIOCGIFFLAGS/SIOCSIFFLAGS use.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS only reads the `ifreq` we pass, which is live for the call.
    if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(fail());
    }
    close(sock);
    Ok(())
}

/// `/proc` (of the new pid namespace: this is pid 1 in it), a tmpfs `/dev` with the default
/// devices, `/dev/pts`, `/dev/shm`, and a read-only `/sys`, as in the OCI runtime spec's
/// default mounts (the host's `/sys` bound read-only when `user_namespace_host_network`).
pub(super) fn mount_kernel_filesystems(
    root: RawFd,
    user_namespace_host_network: bool,
    tty_gid_mapped: bool,
) -> Result<(), Failure> {
    let open = |path: &CStr, flags, step| {
        open_in_root(root, path, flags | libc::O_DIRECTORY).map_err(|errno| Failure {
            step,
            index: 0,
            errno,
        })
    };
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

    let proc = open(c"proc", libc::O_PATH, Step::MountProc)?;
    check(
        mount(
            c"proc".as_ptr(),
            FdPath::new(proc, c"").as_ptr(),
            c"proc".as_ptr(),
            nosuid_nodev_noexec,
            std::ptr::null(),
        ),
        Step::MountProc,
        0,
    )?;
    close(proc);

    let dev = open(c"dev", libc::O_PATH, Step::MountDev)?;
    check(
        mount(
            c"tmpfs".as_ptr(),
            FdPath::new(dev, c"").as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            c"mode=755,size=65536k".as_ptr(),
        ),
        Step::MountDev,
        0,
    )?;
    close(dev);
    // Reopen: the new descriptor is the tmpfs root, which we just created and fully control.
    let dev = open(c"dev", libc::O_PATH, Step::MountDev)?;
    for (i, (name, host)) in DEVICES.iter().zip(HOST_DEVICES).enumerate() {
        let index = i as u32;
        // SAFETY: NUL-terminated name relative to our descriptor; mode is a plain integer.
        let fd = check(
            unsafe {
                libc::openat(
                    dev,
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o666,
                )
            },
            Step::MakeDevice,
            index,
        )?;
        close(fd);
        let mut suffix = [0u8; 16];
        suffix[0] = b'/';
        suffix[1..=name.to_bytes().len()].copy_from_slice(name.to_bytes());
        let suffix = CStr::from_bytes_until_nul(&suffix).unwrap_or(c"");
        check(
            mount(
                host.as_ptr(),
                FdPath::new(dev, suffix).as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ),
            Step::MakeDevice,
            index,
        )?;
    }
    check(
        // SAFETY: NUL-terminated names relative to our descriptor.
        unsafe { libc::mkdirat(dev, c"pts".as_ptr(), 0o755) },
        Step::MountDevpts,
        0,
    )?;
    check(
        mount(
            c"devpts".as_ptr(),
            FdPath::new(dev, c"/pts").as_ptr(),
            c"devpts".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            if tty_gid_mapped {
                c"newinstance,ptmxmode=0666,mode=0620,gid=5".as_ptr()
            } else {
                c"newinstance,ptmxmode=0666,mode=0620".as_ptr()
            },
        ),
        Step::MountDevpts,
        0,
    )?;
    check(
        // SAFETY: a NUL-terminated literal name relative to our open `/dev` descriptor.
        unsafe { libc::mkdirat(dev, c"shm".as_ptr(), 0o1777) },
        Step::MountShm,
        0,
    )?;
    check(
        mount(
            c"shm".as_ptr(),
            FdPath::new(dev, c"/shm").as_ptr(),
            c"tmpfs".as_ptr(),
            nosuid_nodev_noexec,
            c"mode=1777,size=65536k".as_ptr(),
        ),
        Step::MountShm,
        0,
    )?;
    // /dev/pipes: where BuildKit puts a RUN heredoc that runs as a script (`#!`); the engine
    // bind-mounts the script's directory here.
    check(
        // SAFETY: NUL-terminated name, created under our descriptor.
        unsafe { libc::mkdirat(dev, c"pipes".as_ptr(), 0o755) },
        Step::MountShm,
        0,
    )?;
    for (i, (target, name)) in DEV_SYMLINKS.iter().enumerate() {
        check(
            // SAFETY: NUL-terminated strings; the link is created under our descriptor.
            unsafe { libc::symlinkat(target.as_ptr(), dev, name.as_ptr()) },
            Step::DevSymlink,
            i as u32,
        )?;
    }
    close(dev);

    let sys = open(c"sys", libc::O_PATH, Step::MountSys)?;
    if user_namespace_host_network {
        // sysfs can only be mounted by the owner of the network namespace, which is the
        // host's here: bind the host's /sys instead (as rootless runc and podman do), then
        // make the bind read-only, keeping the flags the kernel locked on it.
        check(
            mount(
                c"/sys".as_ptr(),
                FdPath::new(sys, c"").as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
            Step::MountSys,
            1,
        )?;
        close(sys);
        let sys = open(c"sys", libc::O_PATH, Step::MountSys)?;
        check(
            mount(
                std::ptr::null(),
                FdPath::new(sys, c"").as_ptr(),
                std::ptr::null(),
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | nosuid_nodev_noexec
                    | kept_flags(FdPath::new(sys, c"").as_ptr()),
                std::ptr::null(),
            ),
            Step::MountSys,
            2,
        )?;
        close(sys);
        return Ok(());
    }
    check(
        mount(
            c"sysfs".as_ptr(),
            FdPath::new(sys, c"").as_ptr(),
            c"sysfs".as_ptr(),
            nosuid_nodev_noexec | libc::MS_RDONLY,
            std::ptr::null(),
        ),
        Step::MountSys,
        0,
    )?;
    close(sys);
    Ok(())
}

/// `pivot_root(".", ".")` then lazily unmount the old root stacked on top, as runc does
/// (`libcontainer/rootfs_linux.go` `pivotRoot`): no `put_old` directory is needed, so nothing
/// is created in the rootfs.
pub(super) fn pivot(root: RawFd) -> Result<(), Failure> {
    let old = check(
        // SAFETY: a NUL-terminated literal path; the descriptor it returns is ours, closed below.
        unsafe {
            libc::open(
                c"/".as_ptr(),
                libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
            )
        },
        Step::PivotRoot,
        0,
    )?;
    // SAFETY: `root` is the open overlay root directory passed in by `init`.
    check(unsafe { libc::fchdir(root) }, Step::PivotRoot, 1)?;
    check(
        // SAFETY: pivot_root(2) reads two NUL-terminated literal paths.
        unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as c_int },
        Step::PivotRoot,
        2,
    )?;
    // SAFETY: `old` was opened above and is still open.
    check(unsafe { libc::fchdir(old) }, Step::DetachOldRoot, 0)?;
    check(
        mount(
            std::ptr::null(),
            c".".as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ),
        Step::DetachOldRoot,
        1,
    )?;
    check(
        // SAFETY: umount2(2) reads a NUL-terminated literal path.
        unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) },
        Step::DetachOldRoot,
        2,
    )?;
    check(
        // SAFETY: chdir(2) reads a NUL-terminated literal path.
        unsafe { libc::chdir(c"/".as_ptr()) },
        Step::DetachOldRoot,
        3,
    )?;
    close(old);
    close(root);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_are_nul_terminated() {
        let p = FdPath::new(123, c"/null");
        let s = CStr::from_bytes_until_nul(&p.buf).unwrap();
        assert_eq!(s, c"/proc/self/fd/123/null");
        let p = FdPath::new(0, c"");
        assert_eq!(
            CStr::from_bytes_until_nul(&p.buf).unwrap(),
            c"/proc/self/fd/0"
        );
    }
}
