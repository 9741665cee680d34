#!/usr/bin/env bash
# Memory of idle logged-in sessions, fresh-client latency beside them, and RSS
# after load (issue 13 point 6). Memory backend, loopback only.
#
#   bash bench/idle-rss.sh [SESSIONS=10000] [SOAK=500]
#   LOGIN_CACHE_SECS=0 bash bench/idle-rss.sh          # the login cache off
#   FTPGATE_BIN=path/to/ftpgate bash bench/idle-rss.sh  # another build (e.g. main's)
#
# Needs a hard open-files limit above SESSIONS + a few hundred (the script raises
# its own soft limit; ftpgate raises its own at start).
SCRATCH=/dev/shm/ftpgate-idle-rss NAME=idle-rss
. "$(dirname "$0")/lib.sh"
sessions=${1:-10000}
soak=${2:-500}
ulimit -Sn "$(ulimit -Hn)"
build_bin
port=$(pick_port 21300)
http=$(pick_port 21400)
GATE_LOG_LEVEL=info start_gate gate "$port" "$http" 'kind = "memory"' "\
max_sessions = $((sessions + soak + 100))
max_sessions_per_ip = $((sessions + soak + 100))
max_commands_per_sec = 0
$([ -n "${LOGIN_CACHE_SECS:-}" ] && echo "login_cache_secs = $LOGIN_CACHE_SECS")"
grep -m1 'open files limit' "$SCRATCH/logs/gate.log" | sed 's/\x1b\[[0-9;]*m//g' || true
sleep 1
python3 "$REPO/bench/idle_rss.py" "${GATE_PID[gate]}" "$port" "$sessions" "$soak" "$GATE_USER" "$GATE_PASS"
