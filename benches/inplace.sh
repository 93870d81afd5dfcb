#!/usr/bin/env bash
#! In an unprivileged container, in one run: the reference workload (benches/lib) built by
#! `rbuild executor` inside `docker run` (docker's default capabilities and seccomp profile, so
#! the in-place executor) next to rbuild as root on the host. Medians of N runs (default 5) of a
#! cold build (base image in a local registry, empty store), a no-change rebuild and a one-file
#! rebuild; the container's store is a volume kept between its three builds. Goals: pod ≤ 2×
#! rootful cold, ≤ 1.5× one-file. Also prints the size of the executor image's binary layer.
#!
#! Run (as root):   benches/inplace.sh [RUNS]
#! Needs: docker.io (a private dockerd is started here, with no bridge), docker-registry,
#! busybox-static, GNU time.
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p rbuild-cli
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/rbuild
work=$(mktemp -d /var/tmp/rbuild-inplace-bench.XXXXXX)
d=$work/dockerd
mkdir -p "$d"
cleanup() {
  [ -f "$d/pid" ] && kill "$(cat "$d/pid")" 2>/dev/null || true
  [ -n "${reg_pid:-}" ] && kill "$reg_pid" 2>/dev/null || true
  sleep 1
  umount -R "$d/data" 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

# shellcheck source=lib/reference_workload.sh
. benches/lib/reference_workload.sh
make_reference_workload "$work"

# A registry on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
reg=127.0.0.1:$port

# The base, pushed; the workload's FROM names it in the registry.
host_root=$work/host-base
"$bin" --root "$host_root" build --progress plain -t localhost/busybox:latest "$work/base" >/dev/null
"$bin" --root "$host_root" push localhost/busybox:latest "$reg/base/busybox:latest" >/dev/null
sed -i "s#^FROM localhost/busybox:latest#FROM $reg/base/busybox:latest#" "$work/Dockerfile"
cp "$work/Dockerfile" "$work/ctx/Dockerfile"

# The executor image: this rbuild with its libraries and their loader (see tests/inplace.rs).
img=$work/img
mkdir -p "$img/lib"
cp "$bin" "$img/rbuild"
loader=
while read -r path; do
  cp "$path" "$img/lib/"
  case "$(basename "$path")" in ld-linux*) loader=$(basename "$path");; esac
done < <(ldd "$bin" | grep -o '/[^ ]*')
cat > "$img/Dockerfile" <<DF
FROM scratch
COPY rbuild /rbuild/rbuild
COPY lib/ /rbuild/lib/
ENV RBUILD_ROOT=/rbuild/store HOME=/root
VOLUME ["/rbuild/store"]
ENTRYPOINT ["/rbuild/lib/$loader", "--library-path", "/rbuild/lib", "/rbuild/rbuild"]
DF
"$bin" --root "$host_root" build --progress plain -t localhost/rbuild/bench:1 "$img" >/dev/null
"$bin" --root "$host_root" save localhost/rbuild/bench:1 -o "$work/img.tar" --format docker-archive

dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --data-root "$d/data" --exec-root "$d/exec" -p "$d/pid" --host "unix://$d/docker.sock" \
  >"$d/log" 2>&1 &
export DOCKER_HOST=unix://$d/docker.sock
for _ in $(seq 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker load -i "$work/img.tar" >/dev/null

timed() { # timed OUTFILE cmd... ; appends "seconds maxrss_kb"
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/t" >> "$out"
}
pod() { # pod STORE: the executor in an unprivileged container, store volume STORE
  echo docker run --rm --network host -v "$work/ctx:/workspace:ro" -v "$1:/rbuild/store" \
    localhost/rbuild/bench:1 executor --context dir:///workspace --no-push \
    --ignore-path /rbuild --destination app:1
}

for i in $(seq 1 "$runs"); do
  echo "run $i/$runs" >&2
  r=$work/rootful-$i
  timed "$work/rootful.cold" "$bin" --root "$r" build --progress plain -t app:1 "$work/ctx"
  timed "$work/rootful.nochange" "$bin" --root "$r" build --progress plain -t app:1 "$work/ctx"
  echo "change $i" >> "$work/ctx/dir00/file000.txt"
  timed "$work/rootful.onefile" "$bin" --root "$r" build --progress plain -t app:1 "$work/ctx"
  s=$work/pod-store-$i; mkdir -p "$s"
  timed "$work/pod.cold" $(pod "$s")
  timed "$work/pod.nochange" $(pod "$s")
  echo "change p$i" >> "$work/ctx/dir00/file000.txt"
  timed "$work/pod.onefile" $(pod "$s")
done

python3 - "$work" <<'PY'
import statistics, sys
w = sys.argv[1]
def load(name):
    rows = [l.split() for l in open(f"{w}/{name}") if l.strip()]
    return statistics.median(float(r[0]) for r in rows)
print(f"{'scenario':<10} {'rootful s':>10} {'pod s':>8} {'pod/rootful':>12}")
for s in ["cold", "nochange", "onefile"]:
    rf = load(f"rootful.{s}"); p = load(f"pod.{s}")
    print(f"{s:<10} {rf:>10.3f} {p:>8.3f} {p/rf:>12.2f}")
print("pod = `rbuild executor` in `docker run` without privileges (in-place executor), incl. container start")
PY
