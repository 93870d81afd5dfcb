//! A base image without network: a build context that makes a busybox image `FROM scratch` with
//! rbuild itself (the static binary, one relative symlink per applet, `/etc/passwd`).

use std::fs;
use std::io;
use std::path::Path;

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The Dockerfile of the base image. The applet links are made by busybox itself in an exec-form
/// RUN (there is no shell yet), relative (`ln -s busybox /bin/sh`) so they resolve inside the
/// image; `busybox --install -s` would point them at `/proc/self/exe`.
pub const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
COPY etc/ /etc/
RUN ["/bin/busybox", "sh", "-c", "for a in $(/bin/busybox --list); do [ -e /bin/$a ] || /bin/busybox ln -s busybox /bin/$a; done; /bin/busybox mkdir -p /tmp /root /home/app && /bin/busybox chmod 1777 /tmp && /bin/busybox chown 1000:1000 /home/app"]
CMD ["/bin/sh"]
"#;

/// Whether the busybox binary is installed.
pub fn available() -> bool {
    Path::new(BUSYBOX).is_file()
}

/// Writes the base image's build context into `dir`: `Dockerfile`, `busybox`, `etc/passwd`,
/// `etc/group`.
///
/// # Errors
///
/// IO errors; a missing `/bin/busybox` (install Debian's `busybox-static`).
pub fn write_context(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir.join("etc"))?;
    fs::write(dir.join("Dockerfile"), DOCKERFILE)?;
    fs::copy(BUSYBOX, dir.join("busybox"))?;
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )?;
    Ok(())
}
