#!/usr/bin/env bash
#! Multi-platform builds, rbuild next to buildah 1.28 in the same run.
#!
#! Measures, as medians of N runs (default 5) each, cold builds (base image pulled for both
#! platforms beforehand, empty step cache) of a small RUN-heavy Dockerfile:
#!   - two platforms into an index: `rbuild build --platform linux/amd64,linux/arm64` vs
#!     `buildah build --platform linux/amd64,linux/arm64 --manifest`;
#!   - one platform, native vs emulated: `rbuild build --platform linux/amd64` and
#!     `--platform linux/arm64` (RUN steps through QEMU user emulation).
#! The base is a two-platform busybox index (Debian's busybox-static for amd64 and arm64) served
#! by a local docker-registry.
#!
#! Run (as root, on x86_64):   benches/multi_platform.sh [RUNS]
#! Needs: buildah, runc, docker-registry, busybox-static, qemu-user-static registered with
#! binfmt_misc and an arm64 busybox at /usr/local/lib/rbuild-tests/busybox-arm64 (scripts/test
#! sets both up), GNU time (/usr/bin/time).
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p rbuild-cli
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/rbuild
arm64_busybox=${RBUILD_ARM64_BUSYBOX:-/usr/local/lib/rbuild-tests/busybox-arm64}
[ -x "$arm64_busybox" ] || { echo "no arm64 busybox at $arm64_busybox (run scripts/test's set-up)" >&2; exit 1; }
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || { echo "qemu-aarch64 is not registered with binfmt_misc (F flag)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/rbuild-mp-bench.XXXXXX)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  for r in "$work"/buildah-*; do [ -d "$r/root" ] && buildah --root "$r/root" --runroot "$r/run" --storage-driver overlay rm -a >/dev/null 2>&1 || true; done
  umount -R "$work"/buildah-*/root/overlay 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

# --- a registry with the two-platform busybox base
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port, secret: bench}
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
base=127.0.0.1:$port/busybox:multi
bctx=$work/base-ctx
mkdir -p "$bctx/etc"
cp /bin/busybox "$bctx/busybox-amd64"
cp "$arm64_busybox" "$bctx/busybox-arm64"
echo 'root:x:0:0:root:/root:/bin/sh' > "$bctx/etc/passwd"
echo 'root:x:0:' > "$bctx/etc/group"
cat > "$bctx/Dockerfile" <<'DF'
FROM scratch
ARG TARGETARCH
COPY busybox-${TARGETARCH} /bin/busybox
COPY etc/ /etc/
RUN ["/bin/busybox", "sh", "-c", "for a in $(/bin/busybox --list); do [ -e /bin/$a ] || /bin/busybox ln -s busybox /bin/$a; done; /bin/busybox mkdir -p /tmp /root"]
CMD ["/bin/sh"]
DF
"$bin" --root "$work/base-store" build --progress plain --platform linux/amd64,linux/arm64 -t localhost/busybox:multi "$bctx" >/dev/null
"$bin" --root "$work/base-store" push localhost/busybox:multi "$base" >/dev/null

# --- the workload: small, RUN-heavy
ctx=$work/ctx
mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<DF
FROM $base
RUN for i in \$(seq 1 200); do echo \$i > /tmp/f\$i; done
RUN i=0; while [ \$i -lt 20000 ]; do i=\$((i+1)); done; echo \$i > /count
RUN tar -cf /tmp/bin.tar /bin /etc && gzip -c /tmp/bin.tar | wc -c > /size && rm /tmp/bin.tar
RUN ls -lR /bin /etc | wc -l > /lines
RUN sha256sum /bin/busybox > /sum
DF

timed() { # timed OUTFILE cmd... ; appends "seconds"
  local out=$1; shift
  /usr/bin/time -f '%e' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/t" >> "$out"
}
rb() { echo "$bin" --root "$1"; }
bh() { echo buildah --root "$1/root" --runroot "$1/run" --storage-driver overlay; }

for i in $(seq 1 "$runs"); do
  echo "run $i/$runs" >&2
  for p in two amd64 arm64; do
    r=$work/rbuild-$p-$i
    $(rb "$r") pull --platform linux/amd64 "$base" >/dev/null
    $(rb "$r") pull --platform linux/arm64 "$base" >/dev/null
  done
  timed "$work/rbuild.two" $(rb "$work/rbuild-two-$i") build --progress plain --platform linux/amd64,linux/arm64 -t app:multi "$ctx"
  timed "$work/rbuild.amd64" $(rb "$work/rbuild-amd64-$i") build --progress plain --platform linux/amd64 -t app:1 "$ctx"
  timed "$work/rbuild.arm64" $(rb "$work/rbuild-arm64-$i") build --progress plain --platform linux/arm64 -t app:1 "$ctx"
  b=$work/buildah-$i; mkdir -p "$b"
  $(bh "$b") pull --tls-verify=false --platform linux/amd64 "$base" >/dev/null 2>&1
  $(bh "$b") pull --tls-verify=false --platform linux/arm64 "$base" >/dev/null 2>&1
  timed "$work/buildah.two" $(bh "$b") build --layers --tls-verify=false --runtime /usr/sbin/runc -q \
    --platform linux/amd64,linux/arm64 --manifest localhost/app:multi "$ctx"
  $(bh "$b") rm -a >/dev/null 2>&1 || true
  rm -rf "$work/rbuild-two-$i" "$work/rbuild-amd64-$i" "$work/rbuild-arm64-$i"
done

median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
two=$(median "$work/rbuild.two"); btwo=$(median "$work/buildah.two")
amd=$(median "$work/rbuild.amd64"); arm=$(median "$work/rbuild.arm64")
echo
echo "medians of $runs runs (seconds)"
printf '| %-52s | %8s |\n' "case" "seconds"
printf '|%s|%s|\n' "------------------------------------------------------" "----------"
printf '| %-52s | %8s |\n' "rbuild  --platform linux/amd64,linux/arm64" "$two"
printf '| %-52s | %8s |\n' "buildah --platform linux/amd64,linux/arm64 --manifest" "$btwo"
printf '| %-52s | %8s |\n' "rbuild  --platform linux/amd64 (native)" "$amd"
printf '| %-52s | %8s |\n' "rbuild  --platform linux/arm64 (emulated RUN)" "$arm"
echo
awk -v a="$two" -v b="$btwo" 'BEGIN {printf "rbuild / buildah, two platforms: %.2fx (goal <= 0.5x)\n", a/b}'
awk -v a="$arm" -v b="$amd" 'BEGIN {printf "emulated / native, one platform: %.2fx\n", a/b}'
