#!/usr/bin/env bash
# The local backend's streamed reads and listings (the paths that do not use sendfile):
# RETR of a 256 MiB file over TLS (`PROT P`) and MLSD / NLST of a 100,000-entry
# directory, through two ftpgate binaries side by side on one tmpfs root (python
# ftplib over loopback, runs interleaved, medians), with each server's CPU seconds.
# Written for the step-wise reads (one blocking task per 128 KiB chunk or 64 entries
# instead of one thread per stream).
#
#   BENCH_BEFORE_BIN=/path/to/old/ftpgate FTPGATE_BIN=/path/to/new/ftpgate bash bench/local-stream.sh
#
# Environment: BENCH_RUNS (5), BENCH_SIZE_MIB (256), BENCH_ENTRIES (100000), BENCH_OUT
# (bench/local-stream-results-latest.md).
SCRATCH=/dev/shm/ftpgate-local-stream NAME=local-stream
. "$(dirname "$0")/lib.sh"
RUNS=${BENCH_RUNS:-5}
SIZE_MIB=${BENCH_SIZE_MIB:-256}
ENTRIES=${BENCH_ENTRIES:-100000}
OUT=${BENCH_OUT:-$REPO/bench/local-stream-results-latest.md}
[ -n "${BENCH_BEFORE_BIN:-}" ] || die "BENCH_BEFORE_BIN is required"
build_bin
root=$SCRATCH/root
mkdir -p "$root/many"
random_file "$SIZE_MIB"
mv "$SCRATCH/file" "$root/big.bin"
python3 - "$root/many" "$ENTRIES" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    open(os.path.join(d, f"file-{i:06d}.txt"), "w").close()
EOF
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$SCRATCH/key.pem" -out "$SCRATCH/cert.pem" 2>/dev/null
cp "$BENCH_BEFORE_BIN" "$SCRATCH/ftpgate-before"
declare -A PORT=()
for s in before after; do
    bin=$BIN
    [ "$s" = before ] && bin=$SCRATCH/ftpgate-before
    PORT[$s]=$(pick_port 27800)
    BIN=$bin start_gate "$s" "${PORT[$s]}" "$(pick_port 27900)" "kind = \"local\"
root = \"$root\"" "tls = \"optional\"
[tls]
cert_file = \"$SCRATCH/cert.pem\"
key_file = \"$SCRATCH/key.pem\""
done
raw=$SCRATCH/raw.tsv
printf 'server\trun\tphase\tseconds\tcpu_s\n' >"$raw"
for r in $(seq 1 "$RUNS"); do
    for s in before after; do
        [ $((r % 2)) = 0 ] && s=$([ "$s" = before ] && echo after || echo before)
        pid=${GATE_PID[$s]}
        for phase in tls-retr mlsd nlst; do
            c0=$(cpu_ticks "$pid")
            secs=$(python3 - "${PORT[$s]}" "$GATE_USER" "$GATE_PASS" "$phase" "$SIZE_MIB" "$ENTRIES" <<'EOF'
import ftplib, hashlib, ssl, sys, time
port, user, pw, phase, size_mib, entries = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
f = ftplib.FTP_TLS(context=ctx) if phase == "tls-retr" else ftplib.FTP()
f.connect("127.0.0.1", int(port)); f.login(user, pw)
if phase == "tls-retr":
    f.prot_p()
n = [0]
t = time.monotonic()
if phase == "tls-retr":
    f.retrbinary("RETR big.bin", lambda b: n.__setitem__(0, n[0] + len(b)), blocksize=1 << 20)
    assert n[0] == size_mib << 20, n[0]
elif phase == "mlsd":
    f.retrlines("MLSD many", lambda l: n.__setitem__(0, n[0] + 1))
    assert n[0] == entries, n[0]
else:
    f.retrlines("NLST many", lambda l: n.__setitem__(0, n[0] + 1))
    assert n[0] == entries, n[0]
print(f"{time.monotonic() - t:.3f}")
f.quit()
EOF
)
            c1=$(cpu_ticks "$pid")
            printf '%s\t%s\t%s\t%s\t%s\n' "$s" "$r" "$phase" "$secs" "$(ticks_to_s "$c0" "$c1")" >>"$raw"
        done
    done
done
{
    echo "### Local streamed reads and listings ($(date -u '+%Y-%m-%d %H:%M UTC')), medians of $RUNS"
    echo
    machine_note
    echo "- before: $BENCH_BEFORE_BIN; after: $BIN"
    echo
    echo "| phase | before s | after s | after ÷ before (time) | before CPU s | after CPU s |"
    echo "|---|---:|---:|---:|---:|---:|"
    for phase in tls-retr mlsd nlst; do
        b=$(awk -F'\t' -v p=$phase '$1 == "before" && $3 == p { print $4 }' "$raw" | median)
        a=$(awk -F'\t' -v p=$phase '$1 == "after" && $3 == p { print $4 }' "$raw" | median)
        bc=$(awk -F'\t' -v p=$phase '$1 == "before" && $3 == p { print $5 }' "$raw" | median)
        ac=$(awk -F'\t' -v p=$phase '$1 == "after" && $3 == p { print $5 }' "$raw" | median)
        echo "| $phase | $b | $a | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }') | $bc | $ac |"
    done
    echo
    raw_details "$raw"
} >"$OUT.tmp"
publish
