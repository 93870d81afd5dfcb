#!/usr/bin/env bash
#! Rootless builds, in one run: the reference workload (benches/reference_workload.sh) built by
#! rbuild as root, by rbuild as an ordinary user (user namespace, newuidmap ranges), and by
#! buildah 1.28 as the same user (`buildah bud --layers`, runc, overlay storage).
#!
#! Medians of N runs (default 5) of a cold build (base image present, empty step cache), a
#! no-change rebuild and a one-file rebuild. Goals: rootless ≤ 1.2× rootful for cold and one-file,
#! rootless ≤ 0.2× rootless buildah.
#!
#! Run (as root):   benches/rootless.sh [RUNS]
#! The user is $BENCH_USER (default rbuild-bench, created with a /etc/subuid range if missing).
#! Needs: buildah, runc, uidmap, busybox-static, GNU time (/usr/bin/time).
set -euo pipefail
runs=${1:-5}
user=${BENCH_USER:-rbuild-bench}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p rbuild-cli
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if ! id "$user" >/dev/null 2>&1; then
  useradd -m -s /bin/sh "$user"
fi
for f in /etc/subuid /etc/subgid; do
  grep -q "^$user:" "$f" || echo "$user:500000:65536" >> "$f"
done
work=$(mktemp -d /var/tmp/rbuild-rootless-bench.XXXXXX)
chmod 755 "$work"
cleanup() {
  for r in "$work"/buildah-*; do
    [ -d "$r/root" ] && runuser -u "$user" -- env HOME="$work/home" buildah --root "$r/root" \
      --runroot "$r/run" --storage-driver overlay rm -a >/dev/null 2>&1 || true
    runuser -u "$user" -- env HOME="$work/home" buildah unshare rm -rf "$r" 2>/dev/null || true
  done
  for r in "$work"/rootless-*; do
    runuser -u "$user" -- "$work/rbuild" unshare -- rm -rf "$r" 2>/dev/null || true
  done
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
cp "$target/release/rbuild" "$work/rbuild"
bin=$work/rbuild

# --- the workload
# shellcheck source=lib/reference_workload.sh
. benches/lib/reference_workload.sh
make_reference_workload "$work"
base_ctx=$work/base
ctx=$work/ctx
mkdir -p "$work/home"
chown -R "$user" "$work"

timed() { # timed OUTFILE cmd... ; appends "seconds maxrss_kb"
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/t" >> "$out"
}
as_user() { echo runuser -u "$user" -- env HOME="$work/home" XDG_RUNTIME_DIR="$work/home/run"; }
rb() { echo "$bin" --root "$1"; }
bh() { echo "$(as_user) buildah --root $1/root --runroot $1/run --storage-driver overlay"; }
bh_bud() { echo "$(bh "$1") bud --layers --runtime /usr/sbin/runc -q"; }
df="-f $work/Dockerfile"

for i in $(seq 1 "$runs"); do
  echo "run $i/$runs" >&2
  for mode in rootful rootless; do
    r=$work/$mode-$i
    pre=""; [ $mode = rootless ] && pre=$(as_user)
    $pre $(rb "$r") build --progress plain -t localhost/busybox:latest "$base_ctx" >/dev/null
    timed "$work/$mode.cold" $pre $(rb "$r") build --progress plain -t app:1 $df "$ctx"
    timed "$work/$mode.nochange" $pre $(rb "$r") build --progress plain -t app:1 $df "$ctx"
    echo "change $mode $i" >> "$ctx/dir00/file000.txt"
    timed "$work/$mode.onefile" $pre $(rb "$r") build --progress plain -t app:1 $df "$ctx"
  done
  b=$work/buildah-$i
  $(bh_bud "$b") -t localhost/busybox:latest "$base_ctx" >/dev/null
  timed "$work/buildah.cold" $(bh_bud "$b") -t app:1 $df "$ctx"
  timed "$work/buildah.nochange" $(bh_bud "$b") -t app:1 $df "$ctx"
  echo "change b$i" >> "$ctx/dir00/file000.txt"
  timed "$work/buildah.onefile" $(bh_bud "$b") -t app:1 $df "$ctx"
done

python3 - "$work" <<'PY'
import statistics, sys
w = sys.argv[1]
def load(name):
    rows = [l.split() for l in open(f"{w}/{name}") if l.strip()]
    return statistics.median(float(r[0]) for r in rows), max(int(r[1]) for r in rows) / 1024
print(f"{'scenario':<10} {'rootful s':>10} {'rootless s':>11} {'rl/rf':>6} {'buildah-rl s':>13} {'rl/buildah':>11} {'rootless MiB':>13}")
for s in ["cold", "nochange", "onefile"]:
    rf, _ = load(f"rootful.{s}"); rl, rm = load(f"rootless.{s}"); bh, _ = load(f"buildah.{s}")
    print(f"{s:<10} {rf:>10.3f} {rl:>11.3f} {rl/rf:>6.2f} {bh:>13.3f} {rl/bh:>11.3f} {rm:>13.1f}")
print("rl = rbuild as an ordinary user; rf = rbuild as root; buildah-rl = buildah as the same user")
PY
