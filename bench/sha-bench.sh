#!/usr/bin/env bash
# SHA-256 on STOR: local-disk (tmpfs) STOR throughput of ftpgate with
# `storage.upload_sha256 = true` and `false`, curl uploads of one random file,
# BENCH_RUNS runs each (interleaved), median reported in MiB/s.
#
#   bash bench/sha-bench.sh            # BENCH_SIZE_MIB (default 512), BENCH_RUNS (3)
#
# Throughput = size / (time_total - time_pretransfer): the data phase up to the 226
# (fsync + rename included), without connect and login.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${BENCH_SIZE_MIB:-512}
RUNS=${BENCH_RUNS:-3}
SCRATCH=/dev/shm/ftpgate-sha-bench
BIN=${FTPGATE_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=target/release/ftpgate
fi
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$SCRATCH"; }
trap cleanup EXIT
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$SCRATCH/file"
HASH=$(echo -n secret | "$BIN" hash-password | tail -1)
declare -A port
for mode in true false; do
    mkdir -p "$SCRATCH/$mode/data"
    cat > "$SCRATCH/$mode/cfg.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[storage]
kind = "local"
root = "$SCRATCH/$mode/data"
upload_sha256 = $mode
[log]
level = "warn,ftpgate=info"
[[users]]
name = "bench"
password_hash = "$HASH"
TOML
    "$BIN" --config "$SCRATCH/$mode/cfg.toml" 2> "$SCRATCH/$mode/log" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q listening "$SCRATCH/$mode/log" && break
        sleep 0.1
    done
    port[$mode]=$(grep -o 'addr=127.0.0.1:[0-9]*' "$SCRATCH/$mode/log" | head -1 | cut -d: -f2)
done
declare -A results
for run in $(seq "$RUNS"); do
    for mode in true false; do
        out=$(curl -s -T "$SCRATCH/file" -w '%{time_pretransfer} %{time_total}' \
            "ftp://bench:secret@127.0.0.1:${port[$mode]}/f$run")
        rate=$(awk -v s="$SIZE_MIB" -v o="$out" 'BEGIN{split(o,a," "); printf "%.0f", s/(a[2]-a[1])}')
        results[$mode]+="$rate "
        rm -f "$SCRATCH/$mode/data/f$run"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
on=$(echo "${results[true]}" | median)
off=$(echo "${results[false]}" | median)
echo "| upload_sha256 | STOR MiB/s (median of $RUNS, ${SIZE_MIB} MiB, tmpfs) | runs |"
echo "|---|---|---|"
echo "| true  | $on | ${results[true]}|"
echo "| false | $off | ${results[false]}|"
grep -q 'sha256=' "$SCRATCH/true/log" && echo "(transfer events carry sha256=… with hashing on)"
