#!/usr/bin/env bash
# The test command: every unit, in-process cluster and real-Docker test of the workspace.
# The whole-system tests in tests/ run the real `kohakuriver` binary, so it is built first.
# Docker tests build their own image (kohakuriver-test:latest) from /bin/busybox.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p kohakuriver
exec cargo test --workspace --no-fail-fast "$@"
