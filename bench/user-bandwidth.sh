#!/usr/bin/env bash
# Per-user bandwidth limits (issue 14 §2): a user with `upload_bytes_per_sec` and
# `download_bytes_per_sec` = BENCH_RATE (2 MiB/s) uploads and downloads a
# BENCH_SIZE_MIB (20 MiB) file with curl, BENCH_RUNS times each; then two curl uploads
# of half the size run at once in two sessions of the same user (they share one
# budget, so together they should take as long as one full-size transfer).
#
#   bash bench/user-bandwidth.sh     # writes bench/user-bandwidth-latest.md
#
# Time = curl time_total - time_pretransfer (the data phase up to the 226; connect and
# login excluded). Expected: size / rate = 10 s. Environment (optional): BENCH_SIZE_MIB,
# BENCH_RATE (bytes/s), BENCH_RUNS (3), FTPGATE_BIN, BENCH_OUT.
SCRATCH=/dev/shm/ftpgate-user-bandwidth
NAME=user-bw
. "$(dirname "$0")/lib.sh"
SIZE_MIB=${BENCH_SIZE_MIB:-20}
RATE=${BENCH_RATE:-2097152}
RUNS=${BENCH_RUNS:-3}
OUT=${BENCH_OUT:-$REPO/bench/user-bandwidth-latest.md}
build_bin
T_START=$(date -u '+%Y-%m-%d %H:%M')

BYTES=$((SIZE_MIB * 1048576))
head -c "$BYTES" /dev/urandom >"$SCRATCH/file"
head -c "$((BYTES / 2))" "$SCRATCH/file" >"$SCRATCH/half"
SRC_SHA=$(sha256sum "$SCRATCH/file" | cut -d' ' -f1)
PORT=$(pick_port 27321)
mkdir -p "$SCRATCH/root"
cat >"$SCRATCH/gate.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
[storage]
kind = "local"
root = "$SCRATCH/root"
[log]
level = "warn"
[[users]]
name = "$GATE_USER"
password_hash = '$(gate_hash)'
upload_bytes_per_sec = $RATE
download_bytes_per_sec = $RATE
EOF
spawn gate env -u FTPGATE_BIN "$BIN" --config "$SCRATCH/gate.toml"
wait_ftp "$PORT" "$LAST_PID" gate
URL="ftp://$GATE_USER:$GATE_PASS@127.0.0.1:$PORT"
FMT='%{time_pretransfer}\t%{time_total}\n'
data_secs() { awk -F'\t' '{ printf "%.2f\n", $2 - $1 }'; }

: >"$SCRATCH/up" && : >"$SCRATCH/down"
for i in $(seq 1 "$RUNS"); do
    curl -sS --max-time 120 -T "$SCRATCH/file" -w "$FMT" "$URL/f$i.bin" | data_secs >>"$SCRATCH/up"
    [ "$(sha256sum <"$SCRATCH/root/f$i.bin" | cut -d' ' -f1)" = "$SRC_SHA" ] || die "upload $i differs"
    curl -sS --max-time 120 -o "$SCRATCH/back" -w "$FMT" "$URL/f$i.bin" | data_secs >>"$SCRATCH/down"
    [ "$(sha256sum <"$SCRATCH/back" | cut -d' ' -f1)" = "$SRC_SHA" ] || die "download $i differs"
    log "run $i: up $(tail -1 "$SCRATCH/up") s, down $(tail -1 "$SCRATCH/down") s"
done
# Two sessions of the same user at once, half the size each: wall time of both.
t0=$(date +%s.%N)
curl -sS --max-time 120 -T "$SCRATCH/half" -o /dev/null "$URL/p1.bin" &
c1=$!
curl -sS --max-time 120 -T "$SCRATCH/half" -o /dev/null "$URL/p2.bin" &
c2=$!
wait "$c1" "$c2"
PAR=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')

{
    echo "## Per-user bandwidth ($T_START UTC, tree $GIT)"
    echo
    echo "\`bash bench/user-bandwidth.sh\`: user limited to $RATE B/s each way, ${SIZE_MIB} MiB with curl, $RUNS runs; expected $(awk -v b="$BYTES" -v r="$RATE" 'BEGIN { printf "%.1f", b / r }') s."
    echo
    echo "| transfer | data phase, s (each run) | median |"
    echo "|---|---|---|"
    echo "| upload (STOR) | $(paste -sd' ' "$SCRATCH/up") | $(median <"$SCRATCH/up") |"
    echo "| download (RETR) | $(paste -sd' ' "$SCRATCH/down") | $(median <"$SCRATCH/down") |"
    echo "| 2 sessions × $((SIZE_MIB / 2)) MiB up at once (wall, incl. login) | $PAR | |"
    echo
    machine_note
} >"$OUT.tmp"
publish
