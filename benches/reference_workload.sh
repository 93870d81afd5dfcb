#!/usr/bin/env bash
#! Reference workload, rbuild next to buildah 1.28 in the same run.
#!
#! Measures, as medians of N runs (default 5) each: a cold build (base image present, empty step
#! cache), a no-change rebuild, and a rebuild after one context file changed; and the peak RSS of
#! each tool. The workload: a busybox base; a context of 2,000 files of 100–4,000 bytes in 20
#! directories plus one 50 MiB random file; RUN mkdir/echo, COPY . /src,
#! RUN find /src -type f | wc -l > /app/count, ENV, WORKDIR, CMD.
#!
#! Run (as root):   benches/reference_workload.sh [RUNS]
#! With RBUILD_BASELINE=/path/to/an/older/rbuild, that binary is measured the same way in the same
#! run (interleaved) and a third table compares the two rbuild builds (e.g. the cost of a change).
#! Needs: buildah, runc, busybox-static, GNU time (/usr/bin/time).
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p rbuild-cli
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/rbuild
work=$(mktemp -d /var/tmp/rbuild-bench.XXXXXX)
cleanup() {
  for r in "$work"/buildah-*; do [ -d "$r/root" ] && buildah --root "$r/root" --runroot "$r/run" --storage-driver overlay rm -a >/dev/null 2>&1 || true; done
  umount -R "$work"/buildah-*/root/overlay 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

# --- the workload
# shellcheck source=lib/reference_workload.sh
. benches/lib/reference_workload.sh
make_reference_workload "$work"
base_ctx=$work/base
ctx=$work/ctx

timed() { # timed OUTFILE cmd... ; appends "seconds maxrss_kb"
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/t" >> "$out"
}
# Plain command lines (GNU time runs programs, not shell functions).
rb() { echo "$bin" --root "$1"; }
bh() { echo buildah --root "$1/root" --runroot "$1/run" --storage-driver overlay; }
bh_bud() { echo "$(bh "$1") bud --layers --tls-verify=false --runtime /usr/sbin/runc -q"; }

for i in $(seq 1 "$runs"); do
  echo "run $i/$runs" >&2
  # rbuild
  r=$work/rbuild-$i; mkdir -p "$r"
  $(rb "$r") build --progress plain -t localhost/busybox:latest "$base_ctx" >/dev/null
  timed "$work/rbuild.cold" $(rb "$r") build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
  timed "$work/rbuild.nochange" $(rb "$r") build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
  echo "change $i" >> "$ctx/dir00/file000.txt"
  timed "$work/rbuild.onefile" $(rb "$r") build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
  if [ -n "${RBUILD_BASELINE:-}" ]; then
    o=$work/base-$i; mkdir -p "$o"
    "$RBUILD_BASELINE" --root "$o" build --progress plain -t localhost/busybox:latest "$base_ctx" >/dev/null
    timed "$work/baseline.cold" "$RBUILD_BASELINE" --root "$o" build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
    timed "$work/baseline.nochange" "$RBUILD_BASELINE" --root "$o" build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
    echo "change o$i" >> "$ctx/dir00/file000.txt"
    timed "$work/baseline.onefile" "$RBUILD_BASELINE" --root "$o" build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
  fi
  # buildah
  b=$work/buildah-$i; mkdir -p "$b"
  $(bh_bud "$b") -t localhost/busybox:latest "$base_ctx" >/dev/null
  timed "$work/buildah.cold" $(bh_bud "$b") -t app:1 -f "$work/Dockerfile" "$ctx"
  timed "$work/buildah.nochange" $(bh_bud "$b") -t app:1 -f "$work/Dockerfile" "$ctx"
  echo "change b$i" >> "$ctx/dir00/file000.txt"
  timed "$work/buildah.onefile" $(bh_bud "$b") -t app:1 -f "$work/Dockerfile" "$ctx"
  $(bh "$b") rm -a >/dev/null 2>&1 || true
done

python3 - "$work" <<'PY'
import statistics, sys
w = sys.argv[1]
def load(name):
    rows = [l.split() for l in open(f"{w}/{name}") if l.strip()]
    return statistics.median(float(r[0]) for r in rows), max(int(r[1]) for r in rows) / 1024
print(f"{'scenario':<12} {'rbuild s':>9} {'buildah s':>10} {'ratio':>7} {'rbuild MiB':>11} {'buildah MiB':>12}")
for s in ["cold", "nochange", "onefile"]:
    rt, rm = load(f"rbuild.{s}"); bt, bm = load(f"buildah.{s}")
    print(f"{s:<12} {rt:>9.2f} {bt:>10.2f} {rt/bt if bt else float('nan'):>7.2f} {rm:>11.1f} {bm:>12.1f}")
print("ratio = rbuild / buildah (lower is better); times are medians, RSS is the peak of the runs")
import os
if os.path.exists(f"{w}/baseline.cold"):
    print(f"\n{'scenario':<12} {'rbuild s':>9} {'baseline s':>11} {'ratio':>7}")
    for s in ["cold", "nochange", "onefile"]:
        rt, _ = load(f"rbuild.{s}"); ot, _ = load(f"baseline.{s}")
        print(f"{s:<12} {rt:>9.3f} {ot:>11.3f} {rt/ot if ot else float('nan'):>7.2f}")
    print("ratio = this rbuild / RBUILD_BASELINE (1.00 = no change)")
PY
