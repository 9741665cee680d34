#!/usr/bin/env bash
# Time to finish a cut upload: resuming (curl -C - -T) against starting over (curl -T).
# A BENCH_SIZE_MIB (default 1024) random file is uploaded to ftpgate (local backend,
# root on /dev/shm), cut after 40 % (data connection reset by a python helper: RST),
# then finished either way; BENCH_RUNS (default 3) interleaved rounds.
# BENCH_BACKEND=s3: the same against S3 (a moto_server started here on 127.0.0.1,
# 8 MiB parts); the finished object is checked by downloading it through the gateway.
# Usage: bash bench/resume.sh   (FTPGATE_BIN to pick the binary; default target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FTPGATE_BIN:-target/debug/ftpgate}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
PORT=${BENCH_PORT:-22190}
W=$(mktemp -d /dev/shm/ftpgate-resume.XXXXXX)
BACKEND=${BENCH_BACKEND:-local}
MOTO_PID=
trap 'kill $PID $MOTO_PID 2>/dev/null || true; rm -rf "$W"' EXIT
head -c $((SIZE_MIB << 20)) /dev/urandom >"$W/src.bin"
HASH=$("$BIN" hash-password <<<"bench" 2>/dev/null | tail -1)
if [ "$BACKEND" = s3 ]; then
    MOTO_PORT=${BENCH_MOTO_PORT:-$((PORT + 1))}
    moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$W/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 100); do curl -s -o /dev/null --noproxy '*' "http://127.0.0.1:$MOTO_PORT/" && break; sleep 0.2; done
    curl -sS --noproxy '*' -X PUT "http://127.0.0.1:$MOTO_PORT/bench" >/dev/null
    STORAGE="kind = \"s3\"
bucket = \"bench\"
prefix = \"ftp\"
endpoint = \"http://127.0.0.1:$MOTO_PORT\"
force_path_style = true
allow_http = true
access_key_id = \"testing\"
secret_access_key = \"testing\""
else
    STORAGE="root = \"$W/root\""
fi
cat >"$W/ftpgate.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[storage]
$STORAGE
[[users]]
name = "bench"
password_hash = "$HASH"
[log]
level = "info"
TOML
"$BIN" --config "$W/ftpgate.toml" >"$W/log" 2>&1 &
PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
cut() { # STOR /big.bin, send 40 %, reset.
    python3 - "$PORT" "$W/src.bin" <<'PY'
import socket, struct, sys, re, os
port, src = int(sys.argv[1]), sys.argv[2]
c = socket.create_connection(("127.0.0.1", port)); f = c.makefile("rb")
def cmd(line):
    if line: c.sendall(line.encode() + b"\r\n")
    while True:
        l = f.readline().decode()
        if l[3:4] == " ": return l
cmd(None); cmd("USER bench"); cmd("PASS bench"); cmd("TYPE I")
p = int(re.search(r"\|\|\|(\d+)\|", cmd("EPSV")).group(1))
d = socket.create_connection(("127.0.0.1", p)); cmd("STOR /big.bin")
n = os.path.getsize(src) * 2 // 5
with open(src, "rb") as s:
    while n > 0:
        b = s.read(min(n, 1 << 20)); d.sendall(b); n -= len(b)
d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); d.close()
cmd(None); cmd("QUIT")
PY
}
finish() { # $1: extra curl args
    local t0 t1
    t0=$(date +%s.%N)
    curl -q -sS --noproxy '*' $1 -T "$W/src.bin" -u bench:bench "ftp://127.0.0.1:$PORT/big.bin"
    t1=$(date +%s.%N)
    if [ "$BACKEND" = s3 ]; then
        curl -q -sS --noproxy '*' -u bench:bench -o "$W/back.bin" "ftp://127.0.0.1:$PORT/big.bin"
        cmp -s "$W/src.bin" "$W/back.bin" || { echo "content differs" >&2; exit 1; }
        rm -f "$W/back.bin"
    else
        cmp -s "$W/src.bin" "$W/root/big.bin" || { echo "content differs" >&2; exit 1; }
    fi
    echo "$t1 - $t0" | bc
}
echo "| round | resume (curl -C - -T) s | start over (curl -T) s |"
echo "|---|---|---|"
for r in $(seq "$RUNS"); do
    cut; a=$(finish "-C -")
    cut; b=$(finish "")
    echo "| $r | $a | $b |"
done
echo
echo "Kept at each cut (server log):"
grep -o 'interrupted upload kept as a pending resumable upload.*' "$W/log" | sed 's/\x1b\[[0-9;]*m//g' || true
if [ "$BACKEND" != s3 ]; then
    echo "Time spent hashing the kept bytes at each resume (server log):"
    grep -o 'kept bytes of a resumed upload hashed.*' "$W/log" || grep 'hashed' "$W/log" | sed 's/.*INFO//'
fi
grep -c 'resuming a pending upload' "$W/log" | sed 's/^/resumes logged: /'
