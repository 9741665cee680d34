#!/usr/bin/env bash
# Many concurrent transfers (issue 13 §5): pyftpdlib's own `scripts/ftpbench` run
# against pyftpdlib and ftpgate started side by side on one tmpfs, rounds interleaved.
#
#   bash bench/ftpbench.sh                      # 3 rounds, 300 clients, 10M files
#   BENCH_RUNS=5 CLIENTS=300 SIZE=10M bash bench/ftpbench.sh
#   BENCH_BEFORE_BIN=/path/to/older/ftpgate bash bench/ftpbench.sh   # adds a "before"
#   FTPGATE_BIN=path bash bench/ftpbench.sh     # no build, use this binary
#   FTPBENCH=path/to/scripts/ftpbench           # else fetched from the pyftpdlib sdist
#
# Servers: pyftpdlib 2.2 (max_cons 2000, max_cons_per_ip 0), ftpgate with
# `upload_sha256` on (the default) and off, optionally an older ftpgate; ftpgate with
# max_sessions = max_sessions_per_ip = 2000 (every client comes from 127.0.0.1).
# Prints the median seconds per phase and the peak RSS (VmHWM, reset before each
# round) per server; the raw lines go to bench/ftpbench-results-latest.md too.
SCRATCH=/dev/shm/ftpgate-ftpbench NAME=ftpbench
. "$(dirname "$0")/lib.sh"
runs=${BENCH_RUNS:-3}
clients=${CLIENTS:-300}
size=${SIZE:-10M}
OUT=$REPO/bench/ftpbench-results-latest.md
ulimit -Sn "$(ulimit -Hn)"
python3 -c 'import pyftpdlib' 2>/dev/null || die "pyftpdlib is not installed (pip install pyftpdlib==2.2.0)"
if [ -z "${FTPBENCH:-}" ]; then
    log "fetching scripts/ftpbench from the pyftpdlib 2.2.0 sdist"
    (cd "$SCRATCH" && pip download -q --no-deps --no-binary :all: pyftpdlib==2.2.0 >&2 &&
        tar xzf pyftpdlib-2.2.0.tar.gz)
    FTPBENCH=$SCRATCH/pyftpdlib-2.2.0/scripts/ftpbench
fi
[ -f "$FTPBENCH" ] || die "no ftpbench script at $FTPBENCH"
build_bin

declare -A PORT=() PID=()
servers=()
gate() { # name binary extra-toml
    local name=$1 port http
    port=$(pick_port 27600)
    http=$(pick_port 27700)
    mkdir -p "$SCRATCH/root-$name"
    BIN=$2 start_gate "$name" "$port" "$http" "kind = \"local\"
root = \"$SCRATCH/root-$name\"
$3" "max_sessions = 2000
max_sessions_per_ip = 2000
max_commands_per_sec = 0"
    PORT[$name]=$port
    PID[$name]=${GATE_PID[$name]}
    servers+=("$name")
}

port=$(pick_port 27600)
mkdir -p "$SCRATCH/root-pyftpdlib"
spawn pyftpdlib python3 -c "
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
a = DummyAuthorizer()
a.add_user('$GATE_USER', '$GATE_PASS', sys.argv[1], perm='elradfmwMT')
FTPHandler.authorizer = a
s = FTPServer(('127.0.0.1', int(sys.argv[2])), FTPHandler)
s.max_cons = 2000
s.max_cons_per_ip = 0
s.serve_forever()
" "$SCRATCH/root-pyftpdlib" "$port"
wait_ftp "$port" "$LAST_PID" pyftpdlib
PORT[pyftpdlib]=$port
PID[pyftpdlib]=$LAST_PID
servers+=(pyftpdlib)
gate sha-on "$BIN" ""
gate sha-off "$BIN" "upload_sha256 = false"
if [ -n "${BENCH_BEFORE_BIN:-}" ]; then
    cp "$BENCH_BEFORE_BIN" "$SCRATCH/ftpgate-before"
    gate before "$SCRATCH/ftpgate-before" ""
fi

raw=$SCRATCH/raw.tsv
: >"$raw"
for r in $(seq 1 "$runs"); do
    # Rotate the order each round so no server always runs first.
    n=${#servers[@]}
    for i in $(seq 0 $((n - 1))); do
        s=${servers[$(((i + r) % n))]}
        reset_hwm "${PID[$s]}"
        flt0=$(awk '{ print $10 }' "/proc/${PID[$s]}/stat")
        cpu0=$(cpu_ticks "${PID[$s]}")
        log "round $r: $s"
        python3 "$FTPBENCH" -u "$GATE_USER" -p "$GATE_PASS" -H 127.0.0.1 -P "${PORT[$s]}" \
            -b concurrence -n "$clients" -s "$size" >"$SCRATCH/out" 2>&1 ||
            { cat "$SCRATCH/out" >&2; die "ftpbench failed against $s"; }
        hwm=$(kib "${PID[$s]}" VmHWM)
        flt=$(($(awk '{ print $10 }' "/proc/${PID[$s]}/stat") - flt0))
        cpu=$(ticks_to_s "$cpu0" "$(cpu_ticks "${PID[$s]}")")
        awk -v s="$s" -v r="$r" -v h="$hwm" -v f="$flt" -v c="$cpu" '/concurrent clients/ {
            phase = $0; sub(/^ *[0-9]+ concurrent clients \(/, "", phase); sub(/\).*/, "", phase)
            print s "\t" r "\t" phase " (s)\t" $(NF - 1) }
            END { print s "\t" r "\tpeak RSS (MiB)\t" int(h / 1024)
                  print s "\t" r "\tserver CPU, whole run (s)\t" c
                  print s "\t" r "\tminor page faults, whole run\t" f }' \
            "$SCRATCH/out" >>"$raw"
    done
done

{
    echo "### ftpbench: $clients concurrent clients, $size files, medians of $runs ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    machine_note
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    printf '| phase |'
    for s in "${servers[@]}"; do printf ' %s |' "$s"; done
    echo
    printf '|---|'
    for s in "${servers[@]}"; do printf -- '---:|'; done
    echo
    cut -f3 "$raw" | awk '!seen[$0]++' | while read -r phase; do
        printf '| %s |' "$phase"
        for s in "${servers[@]}"; do
            printf ' %s |' "$(awk -F'\t' -v s="$s" -v p="$phase" '$1 == s && $3 == p { print $4 }' "$raw" | median)"
        done
        echo
    done
    echo
    raw_details "$raw"
} >"$OUT.tmp"
publish
