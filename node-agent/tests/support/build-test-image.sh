#!/bin/sh
# Builds the tiny test image `kohakuriver-test:latest` from the static busybox on this machine
# (no registry needed): a root with bin/busybox plus symlinks, imported with `docker import`.
# Usage: build-test-image.sh [IMAGE]   (needs /bin/busybox, e.g. `apt-get install busybox-static`)
set -eu
IMAGE="${1:-kohakuriver-test:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
if [ ! -x "$BUSYBOX" ]; then
  echo "no static busybox at $BUSYBOX; install busybox-static" >&2
  exit 1
fi
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/shared" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/etc"
cp "$BUSYBOX" "$ROOT/bin/busybox"
# The same commands as tests/src/docker.rs COMMANDS, so both builds make one image.
for cmd in sh echo cat sleep head tail yes seq ls true false env printf kill grep wc dd id date mkdir touch rm; do
  ln -sf busybox "$ROOT/bin/$cmd"
done
tar -C "$ROOT" -c . | docker import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
echo "built $IMAGE"
