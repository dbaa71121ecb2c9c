#!/usr/bin/env bash
# The soak: `kohakuriver up` plus one more agent under mixed load for DURATION (submits,
# kills, pauses, `logs -f`, agent restarts by SIGTERM and SIGKILL, lists and watches, kubectl
# when installed), then checks that no acknowledged task was lost, no core or GPU was ever
# double-booked, the server's RSS grew under 20 % after warm-up and descriptor counts are
# stable. Prints its figures; exits non-zero naming what failed.
#
# Usage: scripts/soak.sh DURATION     e.g. 2m, 30m, 1h (at least 30s)
#
# The load itself is the ignored test `soak` of tests/tests/soak.rs (the harness there
# starts the daemons on free ports with their own data dirs and cleans up after itself).
# This script builds what it needs, runs it in its own process group, and on Ctrl-C or any
# failure kills that group and removes the containers of the soak's nodes (label
# kohakuriver.node=NODE, nodes named by the test in a state file) and its temp dir; it never
# touches other containers.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-}"
if [[ -z "$duration" || "$duration" == -* ]]; then
  echo "usage: scripts/soak.sh DURATION   (e.g. 2m, 30m)" >&2
  exit 2
fi
docker info >/dev/null 2>&1 || { echo "soak: the Docker engine is not answering; start it" >&2; exit 1; }
if ! docker image inspect kohakuriver-test:latest >/dev/null 2>&1; then
  node-agent/tests/support/build-test-image.sh kohakuriver-test:latest
fi
cargo build -p kohakuriver
cargo test -p kohakuriver-tests --test soak --no-run

state_dir="$(mktemp -d "${TMPDIR:-/tmp}/kr-soak-XXXXXX")"
state="$state_dir/state"
pid=""

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  if [[ -f "$state" ]]; then
    while read -r kind value; do
      case "$kind" in
        node)
          ids="$(docker ps -aq --filter "label=kohakuriver.node=$value" 2>/dev/null || true)"
          [[ -n "$ids" ]] && docker rm -f $ids >/dev/null 2>&1 || true
          ;;
        dir)
          [[ "$value" == "${TMPDIR:-/tmp}"/kr-test-* ]] && rm -rf "$value"
          ;;
      esac
    done <"$state"
  fi
  rm -rf "$state_dir"
  exit "$code"
}
trap cleanup EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT
trap 'echo "soak: terminated" >&2; exit 143' TERM

# Job control gives the test its own process group (pgid = its pid), so the cleanup can
# stop it and every daemon and CLI it started at once, and a Ctrl-C reaches only this script.
set -m
KR_SOAK_DURATION="$duration" KR_SOAK_STATE="$state" \
  cargo test -p kohakuriver-tests --test soak -- --ignored --exact soak --nocapture &
pid=$!
set +m
wait "$pid"
