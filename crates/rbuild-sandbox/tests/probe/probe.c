/* Tries one privileged operation and prints `NAME: RESULT` (`ok` or the errno's name), so a
 * test can tell "refused" from "not there". Built with `cc -static` so that it runs in any
 * rootfs. Each operation is harmless when it succeeds: it happens inside the sandbox's own
 * namespaces (a tmpfs mounted on a fresh directory, a child that exits at once). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errname(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case EFAULT: return "EFAULT";
    case ESTALE: return "ESTALE";
    case EBADF: return "EBADF";
    default: return "OTHER";
    }
}

/* A child made with raw clone/clone3 exits at once; the parent reaps it. */
static long reap(long pid) {
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid > 0 ? 0 : pid;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *what = argv[1];
    long r;
    errno = 0;
    if (!strcmp(what, "mount")) {
        mkdir("/probe-mnt", 0755);
        r = mount("none", "/probe-mnt", "tmpfs", 0, NULL);
    } else if (!strcmp(what, "unshare-user")) {
        r = unshare(CLONE_NEWUSER);
    } else if (!strcmp(what, "unshare-mount")) {
        r = unshare(CLONE_NEWNS);
    } else if (!strcmp(what, "clone-newuser")) {
        r = reap(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    } else if (!strcmp(what, "fork")) {
        r = reap(fork());
    } else if (!strcmp(what, "clone3")) {
        unsigned long long args[11] = {0};
        args[4] = SIGCHLD; /* exit_signal */
        r = reap(syscall(435 /* clone3 */, args, 88));
    } else if (!strcmp(what, "open_by_handle_at")) {
        /* The "shocker" call: a handle for inode 2 (a filesystem root) of the filesystem of
         * /etc/hosts, which docker and the sandbox bind-mount from the host. */
        struct { unsigned int bytes; int type; unsigned char h[8]; } fh = {8, 1, {2, 0, 0, 0, 0, 0, 0, 0}};
        int mfd = open("/etc/hosts", O_RDONLY);
        r = syscall(SYS_open_by_handle_at, mfd, &fh, O_RDONLY);
    } else if (!strcmp(what, "keyctl")) {
        r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1);
    } else if (!strcmp(what, "init_module")) {
        r = syscall(SYS_init_module, NULL, 0, "");
    } else {
        fprintf(stderr, "unknown probe %s\n", what);
        return 2;
    }
    printf("%s: %s\n", what, r == -1 ? errname(errno) : "ok");
    return 0;
}
