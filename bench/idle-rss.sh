#!/usr/bin/env bash
# Memory of idle logged-in sessions, fresh-client latency beside them, and RSS
# after load (issue 13 point 6). Memory backend, loopback only.
#
#   bash bench/idle-rss.sh [SESSIONS=10000] [SOAK=500]
#   LOGIN_CACHE_SECS=0 bash bench/idle-rss.sh    # the login cache off
#   BIN=path/to/ftpgate bash bench/idle-rss.sh   # another build (e.g. main's)
#
# Needs a hard open-files limit above SESSIONS + a few hundred (the script raises
# its own soft limit; ftpgate raises its own at start).
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-10000}
soak=${2:-500}
if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p ftpgate
    BIN=$PWD/target/release/ftpgate
fi
ulimit -Sn "$(ulimit -Hn)"
dir=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$dir"' EXIT
hash=$(echo -n pw | "$BIN" hash-password | tail -1)
cat > "$dir/c.toml" <<TOML
[server]
listen = "127.0.0.1:0"
max_sessions = $((sessions + soak + 100))
max_sessions_per_ip = $((sessions + soak + 100))
max_commands_per_sec = 0
$( [ -n "${LOGIN_CACHE_SECS:-}" ] && echo "login_cache_secs = $LOGIN_CACHE_SECS" )
[storage]
kind = "memory"
[[users]]
name = "u"
password_hash = "$hash"
TOML
"$BIN" --config "$dir/c.toml" 2> "$dir/log" &
pid=$!
for _ in $(seq 100); do grep -q 'listening' "$dir/log" && break; sleep 0.1; done
port=$(grep -o 'addr=127.0.0.1:[0-9]*' "$dir/log" | head -1 | cut -d: -f2)
grep -m1 'open files limit' "$dir/log" | sed 's/\x1b\[[0-9;]*m//g' || true
sleep 1
python3 bench/idle_rss.py "$pid" "$port" "$sessions" "$soak"
