#!/usr/bin/env bash
# Resident memory of ftpgate across logins: 10 sequential, then 2 x 20 parallel
# (Python ftplib), memory backend, loopback only. Prints VmHWM and VmRSS afterwards.
#
#   bash bench/login-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ftpgate
bin=$PWD/target/release/ftpgate
dir=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$dir"' EXIT
hash=$(echo -n pw | "$bin" hash-password | tail -1)
cat > "$dir/c.toml" <<TOML
[server]
listen = "127.0.0.1:0"
max_sessions_per_ip = 100
[storage]
kind = "memory"
[[users]]
name = "u"
password_hash = "$hash"
TOML
"$bin" --config "$dir/c.toml" 2> "$dir/log" &
pid=$!
for _ in $(seq 50); do grep -q 'addr=' "$dir/log" && break; sleep 0.1; done
port=$(grep -o 'addr=127.0.0.1:[0-9]*' "$dir/log" | cut -d: -f2)
python3 - "$port" <<'PY'
import ftplib, sys, threading
port = int(sys.argv[1])
def go():
    f = ftplib.FTP(); f.connect("127.0.0.1", port); f.login("u", "pw"); f.voidcmd("NOOP"); f.quit()
for _ in range(10):
    go()
for _ in range(2):
    ts = [threading.Thread(target=go) for _ in range(20)]
    [t.start() for t in ts]; [t.join() for t in ts]
print("50 logins done")
PY
grep -E 'VmHWM|VmRSS' "/proc/$pid/status"
