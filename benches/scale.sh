#!/usr/bin/env bash
#! Context scale and layer size: how rbuild's cost grows with the number of context files, next
#! to the floors of the same work and next to buildah, in one run.
#!
#! Part 1, per context size N (default 2,000, 20,000 and 100,000 files of 50–2,000 bytes of
#! source-like text in 200 directories; `COPY . /src`, then a RUN), medians of RUNS runs:
#!
#!   stat walk     `find CTX -printf '%i %s %T@ %C@\n'`: the floor of a no-change rebuild
#!   tar|gzip -1   `tar -c CTX | gzip -1`: the floor of a one-file rebuild and a cold build
#!   cold          fresh store with the base image present, empty step and hash caches
#!   nochange      the same build again
#!   onefile       after one context file changed
#!
#! each with its ratio to its floor, the peak RSS per size, and buildah 1.28 for the sizes in
#! BUILDAH_SIZES (default 20000). With RBUILD_BASELINE=/path/to/an/older/rbuild that binary is
#! measured the same way, interleaved, so one run gives the before and after of a change.
#!
#! Part 2 (skipped unless DEBIAN_TAR names a rootfs tar or `mmdebstrap` is installed, which
#! makes a Debian bookworm minbase once and keeps it in /var/tmp): `FROM scratch` + `ADD
#! rootfs.tar /`, the layer's size and the build time per compression level, next to buildah's
#! layer (its push compresses at Go's default level) and to `gzip -1`/`gzip -6` of the tar.
#!
#! Run (as root):   benches/scale.sh [RUNS] [SIZES...]     e.g. benches/scale.sh 3 2000 20000
#! Needs: python3, GNU time (/usr/bin/time), busybox-static, runc; buildah for the peer columns.
set -euo pipefail
runs=${1:-3}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(2000 20000 100000)
buildah_sizes=" ${BUILDAH_SIZES-20000} "
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p rbuild-cli
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/rbuild
have_buildah=$(command -v buildah >/dev/null && echo 1 || echo 0)
work=$(mktemp -d /var/tmp/rbuild-scale.XXXXXX)
cleanup() {
  for r in "$work"/buildah-*; do [ -d "$r/root" ] && buildah --root "$r/root" --runroot "$r/run" --storage-driver overlay rm -a >/dev/null 2>&1 || true; done
  umount -R "$work"/buildah-*/root/overlay 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

timed() { # timed OUTFILE cmd... ; appends "seconds maxrss_kb"
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/t" >> "$out"
}
timed_sh() { timed "$1" sh -c "$2"; }
bh() { echo buildah --root "$1/root" --runroot "$1/run" --storage-driver overlay; }
bh_bud() { echo "$(bh "$1") bud --layers --tls-verify=false --runtime /usr/sbin/runc -q"; }

base_ctx=$work/base
cp -r examples/busybox "$base_ctx"
cp /bin/busybox "$base_ctx/busybox"
cat > "$work/Dockerfile" <<'DF'
FROM localhost/busybox:latest
COPY . /src
RUN find /src -type f | wc -l > /count
DF

make_ctx() { # make_ctx DIR N: N files in 200 directories, 50–2,000 bytes of source-like text
  python3 - "$1" "$2" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(n)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz_') for _ in range(rng.randint(2, 10)))
         for _ in range(4000)]
for d in range(200):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
for i in range(n):
    size = rng.randint(50, 2000)
    out, length = [], 0
    while length < size:
        w = rng.choice(words) + rng.choice(' \n(){};,.=')
        out.append(w)
        length += len(w)
    with open(f"{root}/d{i % 200:03}/f{i:06}.txt", "w") as fh:
        fh.write(''.join(out)[:size])
PY
}

rbuild_round() { # rbuild_round TAG BIN SIZE RUN
  local tag=$1 b=$2 n=$3 i=$4 r=$work/$1-$3-$4
  mkdir -p "$r"
  "$b" --root "$r" build --progress plain -t localhost/busybox:latest "$base_ctx" >/dev/null
  timed "$work/$tag.$n.cold" "$b" --root "$r" build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
  timed "$work/$tag.$n.nochange" "$b" --root "$r" build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
  echo "change $tag $i" >> "$ctx/d000/f000000.txt"
  timed "$work/$tag.$n.onefile" "$b" --root "$r" build --progress plain -t app:1 -f "$work/Dockerfile" "$ctx"
  rm -rf "$r"
}

for n in "${sizes[@]}"; do
  ctx=$work/ctx-$n
  echo "size $n: writing the context" >&2
  make_ctx "$ctx" "$n"
  sync
  for i in $(seq 1 "$runs"); do
    echo "size $n run $i/$runs" >&2
    timed_sh "$work/floor.$n.walk" "find '$ctx' -printf '%i %s %T@ %C@\n' >/dev/null"
    timed_sh "$work/floor.$n.targz" "tar -cf - -C '$ctx' . | gzip -1 >/dev/null"
    rbuild_round rbuild "$bin" "$n" "$i"
    if [ -n "${RBUILD_BASELINE:-}" ]; then rbuild_round baseline "$RBUILD_BASELINE" "$n" "$i"; fi
    if [ "$have_buildah" = 1 ] && [[ $buildah_sizes == *" $n "* ]]; then
      b=$work/buildah-$n-$i; mkdir -p "$b"
      $(bh_bud "$b") -t localhost/busybox:latest "$base_ctx" >/dev/null
      timed "$work/buildah.$n.cold" $(bh_bud "$b") -t app:1 -f "$work/Dockerfile" "$ctx"
      timed "$work/buildah.$n.nochange" $(bh_bud "$b") -t app:1 -f "$work/Dockerfile" "$ctx"
      echo "change buildah $i" >> "$ctx/d000/f000000.txt"
      timed "$work/buildah.$n.onefile" $(bh_bud "$b") -t app:1 -f "$work/Dockerfile" "$ctx"
      $(bh "$b") rm -a >/dev/null 2>&1 || true
      umount -R "$b/root/overlay" 2>/dev/null || true
      rm -rf "$b"
    fi
  done
  rm -rf "$ctx"
done

python3 - "$work" "${sizes[@]}" <<'PY'
import os, statistics, sys
w, sizes = sys.argv[1], sys.argv[2:]
def load(name):
    p = f"{w}/{name}"
    if not os.path.exists(p):
        return None, None
    rows = [l.split() for l in open(p) if l.strip()]
    return statistics.median(float(r[0]) for r in rows), max(int(r[1]) for r in rows) / 1024
floor_of = {"cold": "targz", "nochange": "walk", "onefile": "targz"}
tools = ["rbuild"] + (["baseline"] if os.path.exists(f"{w}/baseline.{sizes[0]}.cold") else [])
print(f"{'files':>7} {'scenario':<9} {'floor':<11} {'floor s':>8} "
      + "".join(f"{t+' s':>11} {'/floor':>7} " for t in tools)
      + f"{'buildah s':>10} {'/buildah':>9}")
for n in sizes:
    for s in ["nochange", "onefile", "cold"]:
        fl, _ = load(f"floor.{n}.{floor_of[s]}")
        bt, _ = load(f"buildah.{n}.{s}")
        row = f"{int(n):>7} {s:<9} {('stat walk' if s == 'nochange' else 'tar|gzip-1'):<11} {fl:>8.3f} "
        for t in tools:
            rt, _ = load(f"{t}.{n}.{s}")
            row += f"{rt:>11.3f} {rt/fl:>7.2f} "
        rt, _ = load(f"rbuild.{n}.{s}")
        row += f"{bt:>10.3f} {rt/bt:>9.2f}" if bt else f"{'-':>10} {'-':>9}"
        print(row)
print("\npeak RSS (MiB, largest over all scenarios and runs)")
for n in sizes:
    print(f"{int(n):>7} " + "  ".join(
        f"{t} {max(load(f'{t}.{n}.{s}')[1] for s in floor_of):.1f}" for t in tools + ["buildah"]
        if load(f"{t}.{n}.cold")[1] is not None))
print("times are medians; /floor and /buildah use this rbuild's median")
PY

# --- Part 2: layer size and time per compression level, a Debian base as `ADD rootfs.tar /`.
deb=${DEBIAN_TAR:-/var/tmp/rbuild-bench-bookworm-minbase.tar}
if [ ! -f "$deb" ]; then
  if command -v mmdebstrap >/dev/null; then
    echo "making $deb with mmdebstrap" >&2
    mmdebstrap --quiet --variant=minbase bookworm "$deb" /etc/apt/sources.list.d/debian.sources >&2
  else
    echo "no DEBIAN_TAR and no mmdebstrap: skipping the layer-size part" >&2
    exit 0
  fi
fi
dctx=$work/debian
mkdir -p "$dctx"
cp "$deb" "$dctx/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\n' > "$dctx/Dockerfile"
layer_size() { # layer_size OCI_DIR: total size of the image's layers
  python3 - "$1" <<'PY'
import json, sys
d = sys.argv[1]
def blob(desc):
    return json.load(open(f"{d}/blobs/{desc['digest'].replace(':', '/')}"))
m = json.load(open(f"{d}/index.json"))["manifests"][0]
m = blob(m)
print(sum(l["size"] for l in m["layers"]))
PY
}
: > "$work/sizes"
levels=(gzip:1 gzip:6 gzip:9 zstd:3 zstd:19)
for i in $(seq 1 "$runs"); do
  echo "debian run $i/$runs" >&2
  for cl in default "${levels[@]}"; do
    r=$work/deb-$i; rm -rf "$r"; mkdir -p "$r"
    if [ "$cl" = default ]; then flags=(); else flags=(--compression "${cl%%:*}" --compression-level "${cl##*:}"); fi
    timed "$work/deb.$cl" "$bin" --root "$r" build --progress plain "${flags[@]}" -t deb:1 "$dctx"
    if [ "$i" = 1 ]; then
      "$bin" --root "$r" save -o "$work/deb-oci" deb:1 >/dev/null
      echo "rbuild($cl) $(layer_size "$work/deb-oci")" >> "$work/sizes"
      rm -rf "$work/deb-oci"
    fi
    rm -rf "$r"
  done
  if [ "$have_buildah" = 1 ]; then
    b=$work/buildah-deb-$i; mkdir -p "$b"
    timed "$work/deb.buildah" $(bh_bud "$b") -t deb:1 "$dctx"
    if [ "$i" = 1 ]; then
      timed "$work/deb.buildah-push" $(bh "$b") push -q deb:1 "oci:$work/deb-oci-b:x"
      echo "buildah $(layer_size "$work/deb-oci-b")" >> "$work/sizes"
    fi
    $(bh "$b") rm -a >/dev/null 2>&1 || true
    umount -R "$b/root/overlay" 2>/dev/null || true
    rm -rf "$b"
  fi
done
for l in 1 6; do
  timed_sh "$work/deb.gzip-$l" "gzip -$l < '$deb' > '$work/g'"
  echo "gzip-$l $(stat -c %s "$work/g")" >> "$work/sizes"
done
python3 - "$work" "$(stat -c %s "$deb")" <<'PY'
import os, statistics, sys
w, tar = sys.argv[1], int(sys.argv[2])
sizes = dict(l.split() for l in open(f"{w}/sizes"))
def t(name):
    p = f"{w}/deb.{name}"
    return statistics.median(float(l.split()[0]) for l in open(p)) if os.path.exists(p) else None
ref = int(sizes["buildah"]) if "buildah" in sizes else None
print(f"\nDebian bookworm minbase, ADD rootfs.tar / ({tar/1e6:.1f} MB tar)")
print(f"{'producer':<18} {'layer MB':>9} {'/buildah':>9} {'build s':>8}")
for k, v in sizes.items():
    name = k[len("rbuild("):-1] if k.startswith("rbuild(") else k
    tt = t(name) if k.startswith("rbuild(") else t(k)
    print(f"{k:<18} {int(v)/1e6:>9.2f} {(int(v)/ref if ref else float('nan')):>9.3f} "
          + (f"{tt:>8.2f}" if tt is not None else f"{'-':>8}"))
print("build s: median build time (buildah: bud only; its layer is compressed at push, timed once "
      f"at {t('buildah-push') or float('nan'):.2f} s)")
PY
