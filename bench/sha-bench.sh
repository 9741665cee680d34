#!/usr/bin/env bash
# SHA-256 on STOR (issue 7): local-disk (tmpfs) STOR throughput of ftpgate with
# `storage.upload_sha256 = true` and `false`, two ftpgate processes side by side, curl
# uploads of one random file, BENCH_RUNS runs each (interleaved, the order alternating),
# medians; plus ftpgate's CPU seconds per GiB uploaded (utime + stime of the process over
# the upload), whose difference is the cost of hashing.
#
#   bash bench/sha-bench.sh          # writes bench/sha-results-latest.md
#
# Throughput = size / (curl time_total - time_pretransfer): the data phase up to the 226
# (fsync + rename included), without connect and login. Before each timed upload
# BENCH_PREFAULT_MIB are written to tmpfs and deleted (see bench.sh: this VM returns
# freed memory to the host, and writing into such pages costs a host fault each).
# Every stored file is compared with the source (sha256sum); with hashing on, the
# sha256=… of the transfer event in ftpgate's log must equal it too.
#
# Environment (optional): BENCH_SIZE_MIB (1024), BENCH_RUNS (5), BENCH_PREFAULT_MIB
# (2 x size + 512; 0 disables), FTPGATE_BIN, BENCH_OUT.
SCRATCH=/dev/shm/ftpgate-sha-bench
NAME=sha
. "$(dirname "$0")/lib.sh"
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-5}
PREFAULT_MIB=${BENCH_PREFAULT_MIB:-$((2 * SIZE_MIB + 512))}
OUT=${BENCH_OUT:-$REPO/bench/sha-results-latest.md}
build_bin
T_START=$(date -u '+%Y-%m-%d %H:%M')

BYTES=$((SIZE_MIB * 1048576))
log "generating ${SIZE_MIB} MiB of random data"
openssl rand -out "$SCRATCH/file" "$BYTES" 2>/dev/null || head -c "$BYTES" /dev/urandom >"$SCRATCH/file"
SRC_SHA=$(sha256sum "$SCRATCH/file" | cut -d' ' -f1)

declare -A PORT=()
for mode in on off; do
    mkdir -p "$SCRATCH/root-$mode"
    PORT[$mode]=$(pick_port $((27121 + ${#PORT[@]} * 10)))
    # info level for ftpgate's own events: the transfer event carries sha256=…
    GATE_LOG_LEVEL="warn,ftpgate=info" start_gate "$mode" "${PORT[$mode]}" "$(pick_port 27100)" "kind = \"local\"
root = \"$SCRATCH/root-$mode\"
upload_sha256 = $([ "$mode" = on ] && echo true || echo false)"
done

prefault() {
    [ "$PREFAULT_MIB" -gt 0 ] || return 0
    dd if=/dev/zero of="$SCRATCH/prefault" bs=1M count="$PREFAULT_MIB" status=none
    rm -f "$SCRATCH/prefault"
}
curl -s -T "$SCRATCH/file" "ftp://$GATE_USER:$GATE_PASS@127.0.0.1:${PORT[on]}/warm" -o /dev/null # warm-up
curl -s -T "$SCRATCH/file" "ftp://$GATE_USER:$GATE_PASS@127.0.0.1:${PORT[off]}/warm" -o /dev/null
rm -f "$SCRATCH"/root-*/warm

RAW=$SCRATCH/raw.tsv
printf 'mode\trun\tMiB_s\tgate_cpu_s\tcpu_s_per_GiB\n' >"$RAW"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq 1 "$RUNS"); do
    order=(on off)
    [ $((run % 2)) = 0 ] && order=(off on)
    for mode in "${order[@]}"; do
        prefault
        pid=${GATE_PID[$mode]}
        c0=$(cpu_ticks "$pid")
        out=$(curl -sS --fail -T "$SCRATCH/file" -w '%{time_pretransfer} %{time_total}' \
            "ftp://$GATE_USER:$GATE_PASS@127.0.0.1:${PORT[$mode]}/f$run")
        c1=$(cpu_ticks "$pid")
        got=$(sha256sum "$SCRATCH/root-$mode/f$run" | cut -d' ' -f1)
        [ "$got" = "$SRC_SHA" ] || die "$mode run $run: stored file differs"
        if [ "$mode" = on ]; then
            sleep 0.2
            grep -Eq "sha256=\"?$SRC_SHA" "$SCRATCH/logs/on.log" || { tail -3 "$SCRATCH/logs/on.log" >&2; die "no transfer event with sha256=$SRC_SHA in the log"; }
        fi
        rm -f "$SCRATCH/root-$mode/f$run"
        awk -v b="$BYTES" -v o="$out" -v m="$mode" -v r="$run" -v c="$(ticks_to_s "$c0" "$c1")" 'BEGIN {
            split(o, a, " "); printf "%s\t%s\t%.1f\t%s\t%.2f\n", m, r, b / (a[2] - a[1]) / 1048576, c, c / (b / 1073741824) }' >>"$RAW"
        log "$(tail -1 "$RAW" | tr '\t' ' ')"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
med() { awk -F'\t' -v m="$1" -v k="$2" 'NR > 1 && $1 == m { print $k }' "$RAW" | median; }
runs_of() { awk -F'\t' -v m="$1" 'NR > 1 && $1 == m { printf "%s%s", s, $3; s = " / " }' "$RAW"; }
ON=$(med on 3); OFF=$(med off 3); CON=$(med on 5); COFF=$(med off 5)
{
    echo "## SHA-256 on STOR, local backend on tmpfs $T_START UTC"
    echo
    machine_note
    echo "- ${SIZE_MIB} MiB random file, curl STOR, $RUNS runs per setting interleaved (order alternating), median; ${PREFAULT_MIB} MiB pre-fault before each; load average $LOAD_BEFORE before, $LOAD_AFTER after"
    echo
    echo "| storage.upload_sha256 | STOR MiB/s | ftpgate CPU s per GiB | runs MiB/s |"
    echo "|---|---:|---:|---|"
    echo "| true | $ON | $CON | $(runs_of on) |"
    echo "| false | $OFF | $COFF | $(runs_of off) |"
    echo
    echo "Throughput with hashing ÷ without: **$(awk -v a="$ON" -v b="$OFF" 'BEGIN { printf "%.2f", a / b }')×**; hashing costs **$(awk -v a="$CON" -v b="$COFF" 'BEGIN { printf "%.2f", a - b }') CPU s per GiB** (difference of the medians)."
    echo "Every stored file matched the source's sha256; with hashing on, the transfer event logged the same sha256."
    echo
    echo '```'
    column -t -s $'\t' "$RAW"
    echo '```'
} >"$OUT.tmp"
publish
