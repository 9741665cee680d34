#!/usr/bin/env bash
# Issue 13 §1 and §2 side by side in one run: RETR and STOR of one random file on
# tmpfs through ftpgate (local backend, `upload_sha256` on and off), optionally an
# older ftpgate binary (the "before"), and vsftpd 3.0.3 (sendfile on RETR), all driven
# by curl over loopback; BENCH_RUNS runs each, interleaved, medians; throughput and the
# server's CPU seconds per GiB (utime + stime over the transfer; vsftpd: listener plus
# its reaped session processes, see bench/subreaper.py).
#
#   bash bench/zero-copy.sh                                  # as root
#   BENCH_BEFORE_BIN=/path/to/old/ftpgate bash bench/zero-copy.sh
#
# Environment (optional): BENCH_SIZE_MIB (256), BENCH_RUNS (3), BENCH_OPS ("RETR STOR"),
# BENCH_PREFAULT_MIB
# (2 x size + 512; written to tmpfs and deleted before each STOR, see bench.sh),
# FTPGATE_BIN (skip the build), BENCH_BEFORE_BIN, BENCH_OUT
# (bench/zero-copy-results-latest.md).
#
# MiB/s = size / (curl time_total - time_pretransfer): the data phase up to the 226
# (ftpgate's fsync + rename included), without connect and login. Every stored file is
# compared with the source.
SCRATCH=/dev/shm/ftpgate-zero-copy
NAME=zero-copy
. "$(dirname "$0")/lib.sh"
SIZE_MIB=${BENCH_SIZE_MIB:-256}
RUNS=${BENCH_RUNS:-3}
PREFAULT_MIB=${BENCH_PREFAULT_MIB:-$((2 * SIZE_MIB + 512))}
OUT=${BENCH_OUT:-$REPO/bench/zero-copy-results-latest.md}
[ "$(id -u)" = 0 ] || die "must run as root (vsftpd anonymous mode needs it)"
[ -x /usr/sbin/vsftpd ] || die "vsftpd is required (apt-get install -y vsftpd)"
build_bin
T_START=$(date -u '+%Y-%m-%d %H:%M')
random_file "$SIZE_MIB"

SERVERS=(sha-on sha-off)
declare -A PORT=() DIR=() CRED=() PIDS_OF=() LABEL=()
for s in sha-on sha-off; do
    DIR[$s]=$SCRATCH/root-$s
    mkdir -p "${DIR[$s]}"
    PORT[$s]=$(pick_port 27221)
    start_gate "$s" "${PORT[$s]}" "$(pick_port 27300)" "kind = \"local\"
root = \"${DIR[$s]}\"
upload_sha256 = $([ "$s" = sha-on ] && echo true || echo false)"
    CRED[$s]="$GATE_USER:$GATE_PASS"
    PIDS_OF[$s]=${GATE_PID[$s]}
done
LABEL[sha-on]="ftpgate $GIT (upload_sha256 on, default)"
LABEL[sha-off]="ftpgate $GIT (upload_sha256 off)"
if [ -n "${BENCH_BEFORE_BIN:-}" ]; then
    AFTER=$BIN
    BIN=$BENCH_BEFORE_BIN
    DIR[before]=$SCRATCH/root-before
    mkdir -p "${DIR[before]}"
    PORT[before]=$(pick_port 27221)
    start_gate before "${PORT[before]}" "$(pick_port 27300)" "kind = \"local\"
root = \"${DIR[before]}\""
    BIN=$AFTER
    CRED[before]="$GATE_USER:$GATE_PASS"
    PIDS_OF[before]=${GATE_PID[before]}
    LABEL[before]="ftpgate before ($BENCH_BEFORE_BIN, upload_sha256 on)"
    SERVERS+=(before)
fi
DIR[vsftpd]=$SCRATCH/vs-root
PORT[vsftpd]=$(pick_port 27221)
start_vsftpd "${DIR[vsftpd]}" "${PORT[vsftpd]}"
CRED[vsftpd]="anonymous:"
PIDS_OF[vsftpd]="$VS_PID $VS_WRAP"
LABEL[vsftpd]="vsftpd $(/usr/sbin/vsftpd -v 0>&1 2>&1 | sed -n 's/.*version //p' | head -1)"
SERVERS+=(vsftpd)

# The RETR source on every root, and the upload directory (vsftpd: owned by ftp).
for s in "${SERVERS[@]}"; do
    mkdir -p "${DIR[$s]}/upload"
    cp "$SCRATCH/file" "${DIR[$s]}/upload/src.bin"
done
chown ftp: "${DIR[vsftpd]}/upload"

# Waits (up to 5 s) until vsftpd's session processes are gone (their CPU time is then
# in the listener's or the wrapper's cutime/cstime).
settle() {
    local i
    for i in $(seq 1 100); do
        [ -z "$(pgrep -P "$VS_PID")" ] && [ -z "$(pgrep -P "$VS_WRAP" | grep -vx "$VS_PID")" ] && return 0
        sleep 0.05
    done
}
CURL=(curl --silent --show-error --fail --max-time 300)
RAW=$SCRATCH/raw.tsv
printf 'server\top\trun\tMiB_s\tcpu_s\tcpu_s_per_GiB\n' >"$RAW"
measure() { # server op run
    local s=$1 op=$2 run=$3 c0 c1 out url
    url="ftp://127.0.0.1:${PORT[$s]}/upload"
    # shellcheck disable=SC2086 # PIDS_OF: several pids for vsftpd
    c0=$(cpu_ticks ${PIDS_OF[$s]})
    if [ "$op" = STOR ]; then
        out=$("${CURL[@]}" --user "${CRED[$s]}" -T "$SCRATCH/file" -o /dev/null \
            -w '%{time_pretransfer} %{time_total}' "$url/stor-$run.bin")
    else
        out=$("${CURL[@]}" --user "${CRED[$s]}" -o "$SCRATCH/got" \
            -w '%{time_pretransfer} %{time_total}' "$url/src.bin")
    fi
    [ "$s" = vsftpd ] && settle
    # shellcheck disable=SC2086
    c1=$(cpu_ticks ${PIDS_OF[$s]})
    if [ "$op" = STOR ]; then
        [ "$(sha256sum "${DIR[$s]}/upload/stor-$run.bin" | cut -d' ' -f1)" = "$SRC_SHA" ] || die "$s STOR $run: stored file differs"
        rm -f "${DIR[$s]}/upload/stor-$run.bin"
    else
        [ "$(sha256sum "$SCRATCH/got" | cut -d' ' -f1)" = "$SRC_SHA" ] || die "$s RETR $run: downloaded file differs"
        rm -f "$SCRATCH/got"
    fi
    awk -v b="$BYTES" -v o="$out" -v s="$s" -v op="$op" -v r="$run" -v c="$(ticks_to_s "$c0" "$c1")" 'BEGIN {
        split(o, a, " "); printf "%s\t%s\t%s\t%.1f\t%s\t%.2f\n", s, op, r, b / (a[2] - a[1]) / 1048576, c, c / (b / 1073741824) }' >>"$RAW"
    log "$(tail -1 "$RAW" | tr '\t' ' ')"
}
# Warm-up: one transfer each way per server.
for s in "${SERVERS[@]}"; do
    "${CURL[@]}" --user "${CRED[$s]}" -o /dev/null "ftp://127.0.0.1:${PORT[$s]}/upload/src.bin"
done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for op in ${BENCH_OPS:-RETR STOR}; do
    for run in $(seq 1 "$RUNS"); do
        # Rotate the order each run, so background load spreads over every server.
        n=${#SERVERS[@]}
        for i in $(seq 0 $((n - 1))); do
            s=${SERVERS[$(((i + run) % n))]}
            [ "$op" = STOR ] && prefault
            measure "$s" "$op" "$run"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
med() { awk -F'\t' -v s="$1" -v o="$2" -v k="$3" 'NR > 1 && $1 == s && $2 == o { print $k }' "$RAW" | median; }
runs_of() { awk -F'\t' -v s="$1" -v o="$2" 'NR > 1 && $1 == s && $2 == o { printf "%s%s", sep, $4; sep = " / " }' "$RAW"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
{
    echo "### RETR / STOR ${SIZE_MIB} MiB on tmpfs, ftpgate beside vsftpd ($T_START UTC, \`bash bench/zero-copy.sh\`)"
    echo
    machine_note
    echo "- load average $LOAD_BEFORE before, $LOAD_AFTER after; $RUNS runs per server and direction, order rotated per run; medians"
    echo
    echo "| server | RETR MiB/s | RETR vs vsftpd | RETR CPU s/GiB | STOR MiB/s | STOR vs vsftpd | STOR CPU s/GiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for s in "${SERVERS[@]}"; do
        echo "| ${LABEL[$s]} | $(med "$s" RETR 4) | $(ratio "$(med "$s" RETR 4)" "$(med vsftpd RETR 4)") | $(med "$s" RETR 6) |" \
            "$(med "$s" STOR 4) | $(ratio "$(med "$s" STOR 4)" "$(med vsftpd STOR 4)") | $(med "$s" STOR 6) |"
    done
    echo
    echo "Per run (MiB/s): $(for s in "${SERVERS[@]}"; do printf '%s RETR %s, STOR %s; ' "$s" "$(runs_of "$s" RETR)" "$(runs_of "$s" STOR)"; done)"
    echo
    raw_details "$RAW"
} >"$OUT.tmp"
publish
