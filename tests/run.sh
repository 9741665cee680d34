#!/usr/bin/env bash
# Runs the whole test suite: unit tests, protocol tests and the end-to-end tests
# that drive real FTP clients (curl, lftp, wget, rclone, python3 ftplib) against
# the ftpgate binary. A client that is not installed makes its tests print
# "SKIPPED" and pass, unless CI is set: then they fail. Extra arguments go to
# `cargo test` (e.g. `bash tests/run.sh --test client_curl`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in curl lftp wget rclone python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ -n "${CI+x}" ]; then
        echo "error: CI is set but these FTP clients are missing: ${missing[*]}" >&2
        exit 1
    fi
    echo "warning: not installed, their end-to-end tests are skipped: ${missing[*]}" >&2
fi

args=(--workspace)
if [ -n "${CI+x}" ] && [ -f Cargo.lock ]; then
    args+=(--locked)
fi
start=$SECONDS
cargo test "${args[@]}" "$@"
echo "tests passed in $((SECONDS - start)) s"
