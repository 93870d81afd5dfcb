#!/usr/bin/env bash
# Builds the example images into the default store ($RBUILD_ROOT, else ~/.local/share/rbuild):
# a busybox base image made FROM scratch, then the hello app on it (RUN steps included), and runs
# the app. Needs root (RUN uses namespaces and overlayfs). Installs busybox-static if missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x /bin/busybox ]; then
  apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null
fi
cd "$here/.."
cargo build --release -q -p rbuild-cli
rbuild() { cargo run --release -q -p rbuild-cli -- "$@"; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -r "$here/busybox/." "$ctx/"
cp /bin/busybox "$ctx/busybox"
rbuild build --progress plain -t localhost/busybox:latest "$ctx"
rbuild build --progress plain -t localhost/hello:latest "$here/hello"
rbuild run localhost/hello:latest
