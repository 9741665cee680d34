#!/usr/bin/env bash
# Per-command latency of small transfers, ftpgate (local backend, tmpfs) vs vsftpd: one
# session each, BENCH_N (default 200) rounds of STOR 1 KiB / RETR / MLSD (LIST on vsftpd)
# / MFMT / NOOP, median and p90 per phase in ms (see bench/reply_latency.py). Explains
# the small-files result: where a ~40 ms stall per data transfer comes from. A third
# column runs ftpgate with bench/nodelay-shim.c preloaded (TCP_NODELAY on every accepted
# socket, i.e. the control connections), if gcc is there.
#
#   bash bench/latency-probe.sh
SCRATCH=/dev/shm/ftpgate-latency
NAME=latency
. "$(dirname "$0")/lib.sh"
N=${BENCH_N:-200}
[ "$(id -u)" = 0 ] || die "must run as root (vsftpd)"
build_bin
mkdir -p "$SCRATCH/gate-root"
GP=$(pick_port 26121)
start_gate gate "$GP" "$(pick_port 26100)" "kind = \"local\"
root = \"$SCRATCH/gate-root\""
if command -v gcc >/dev/null; then
    gcc -shared -fPIC -O2 -o "$SCRATCH/nodelay-shim.so" "$REPO/bench/nodelay-shim.c" -ldl
    mkdir -p "$SCRATCH/gate2-root"
    GP2=$(pick_port 26131)
    GATE_ENV="LD_PRELOAD=$SCRATCH/nodelay-shim.so" start_gate gate2 "$GP2" "$(pick_port 26110)" "kind = \"local\"
root = \"$SCRATCH/gate2-root\""
fi
VP=$(pick_port 26141)
start_vsftpd "$SCRATCH/vs-root" "$VP"
PY=$REPO/bench/reply_latency.py
python3 "$PY" 127.0.0.1 "$GP" "$GATE_USER" "$GATE_PASS" /lat "$N" >"$SCRATCH/gate.tsv"
python3 "$PY" 127.0.0.1 "$VP" anonymous x /upload/lat "$N" >"$SCRATCH/vs.tsv"
: >"$SCRATCH/gate2.tsv"
[ -n "${GP2:-}" ] && python3 "$PY" 127.0.0.1 "$GP2" "$GATE_USER" "$GATE_PASS" /lat "$N" >"$SCRATCH/gate2.tsv"
echo "| phase (ms, $N rounds, one session) | ftpgate median / p90 | ftpgate + TCP_NODELAY shim median / p90 | vsftpd median / p90 |"
echo "|---|---:|---:|---:|"
awk -F'\t' 'FILENAME ~ /gate.tsv$/ { g[$1] = $2 " / " $3; order[++n] = $1; next }
    FILENAME ~ /gate2.tsv$/ { h[$1] = $2 " / " $3; next } { v[$1] = $2 " / " $3 }
    END { for (i = 1; i <= n; i++) { k = order[i]; kk = k; sub(/^MLSD/, "MLSD (vsftpd: LIST)", kk)
          vk = k; sub(/^MLSD/, "LIST", vk)
          printf "| %s | %s | %s | %s |\n", kk, g[k], (k in h) ? h[k] : "–", (vk in v) ? v[vk] : "–" } }' \
    "$SCRATCH/gate.tsv" "$SCRATCH/gate2.tsv" "$SCRATCH/vs.tsv"
