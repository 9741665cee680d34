#!/usr/bin/env bash
# RETR from S3 only: one or more ftpgate builds/configurations beside boto3, side by
# side on one S3 server (moto or s3s-fs), everything on 127.0.0.1. For comparing RETR
# changes (issue 13 §3) without s3-bench.sh's STOR and memory phases.
#
#   BENCH_GATES="old=/path/to/old/ftpgate new=target/release/ftpgate" bash bench/s3-retr.sh
#   BENCH_S3=s3s-fs BENCH_GATES="..." bash bench/s3-retr.sh
#
# Contenders, each run in turn (order rotating per run), BENCH_RUNS runs, medians:
#   - every entry NAME=BINARY[,KEY=VALUE...] of BENCH_GATES: an ftpgate of that binary
#     with `[storage] kind = "s3"` on the server, plus the given storage keys (e.g.
#     `new8=target/release/ftpgate,read_chunk_mib=8`); `curl ftp://…/obj.bin -o
#     /dev/null`, time = curl time_total (connect, login, RETR, 226);
#   - boto3 `download_fileobj` with the default TransferConfig (HEAD, then ranged GETs of
#     8 MiB on 10 threads), time = the call in a connected client;
#   - boto3 one streamed `get_object` (1 MiB reads).
# Per transfer: MiB/s, CPU seconds per GiB of ftpgate, of the S3 server and of the
# client, ftpgate's peak RSS over the transfer (VmHWM reset before it), and, on moto, the
# requests for the object it logged (werkzeug logs a request when it ends, so an aborted
# one may count in the next transfer's row).
#
# The object (BENCH_SIZE_MIB of random bytes) is uploaded once with boto3 upload_file
# (multipart, 8 MiB parts) and checked: every ftpgate contender's first download is
# compared by sha256 with the source.
#
# Environment (all optional):
#   BENCH_GATES     contenders (default: "gate=<cargo build --release>")
#   BENCH_S3        moto | s3s-fs                                                (moto)
#   BENCH_SIZE_MIB  object size                                                   (256)
#   BENCH_RUNS      runs per contender                                              (5)
#   BENCH_OUT       results Markdown         (bench/s3-retr-<server>-latest.md)
#   BENCH_TIMEOUT   curl --max-time per transfer                                  (600)
#   BENCH_FTP_CLIENT curl | ftplib (curl). ftplib: python ftplib in a logged-in session,
#                   time = EPSV + RETR to the 226, like boto3's connected client; curl
#                   7.88 adds 200 ms to its data connection's connect in 1 of 4-5
#                   transfers (its connect-filter timer; see BENCHMARKS.md), ftplib not.
set -euo pipefail

SCRATCH=/dev/shm/ftpgate-s3-retr
NAME=s3-retr
. "$(dirname "$0")/lib.sh"
cd "$REPO"

SRV_NAME=${BENCH_S3:-moto}
SIZE_MIB=${BENCH_SIZE_MIB:-256}
RUNS=${BENCH_RUNS:-5}
OUT=${BENCH_OUT:-$REPO/bench/s3-retr-$SRV_NAME-latest.md}
MAXTIME=${BENCH_TIMEOUT:-600}
FTP_CLIENT=${BENCH_FTP_CLIENT:-curl}
case "$FTP_CLIENT" in curl | ftplib) ;; *) die "BENCH_FTP_CLIENT must be curl or ftplib" ;; esac
BUCKET=bench
case "$SRV_NAME" in moto | s3s-fs) ;; *) die "BENCH_S3 must be moto or s3s-fs" ;; esac
python3 -c 'import boto3' 2>/dev/null || die "python3 cannot import boto3"

if [ -z "${BENCH_GATES:-}" ]; then
    build_bin
    BENCH_GATES="gate=$BIN"
fi
GIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src backends Cargo.toml Cargo.lock 2>/dev/null || echo "+dirty")

random_file "$SIZE_MIB"
SRC=$SCRATCH/file

# ------------------------------------------------------------- S3 server --
SRV_PORT=$(pick_port 25300)
if [ "$SRV_NAME" = moto ]; then
    start_moto "$SRV_PORT"
    SRV_PID=$MOTO_PID
    grep -qa python "/proc/$SRV_PID/cmdline" || die "pid $SRV_PID is not the moto python process"
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$ENDPOINT/$BUCKET")" = 200 ] || die "cannot create bucket"
else
    mkdir -p "$SCRATCH/s3root/$BUCKET"
    spawn s3s-fs "${S3S_FS:-s3s-fs}" --host 127.0.0.1 --port "$SRV_PORT" --access-key testing \
        --secret-key testing "$SCRATCH/s3root"
    SRV_PID=$LAST_PID
    ENDPOINT=http://127.0.0.1:$SRV_PORT
    for i in $(seq 1 150); do
        curl -s -o /dev/null --max-time 2 "$ENDPOINT/" && break
        [ "$i" = 150 ] && die "s3s-fs did not answer"
        sleep 0.1
    done
fi
log "$SRV_NAME on $ENDPOINT (pid $SRV_PID)"

cat >"$SCRATCH/tool.py" <<'PY'
import os, sys, time
import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
bucket, pid = os.environ["S3_BUCKET"], os.environ["SRV_PID"]

def ticks(p):
    with open(f"/proc/{p}/stat") as f:
        v = f.read()
    v = v[v.rindex(")") + 2:].split()
    return int(v[11]) + int(v[12])

def timed(fn):
    s3.head_bucket(Bucket=bucket)  # connect first
    m0, c0, t0 = ticks(pid), time.process_time(), time.perf_counter()
    n = fn()
    t1, c1, m1 = time.perf_counter(), time.process_time(), ticks(pid)
    print(f"{t1 - t0:.4f} {c1 - c0:.3f} {(m1 - m0) / os.sysconf('SC_CLK_TCK'):.2f} {n}")

def one_get(key):
    n = 0
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        n += len(chunk)
    return n

def ftp_retr(port):  # EPSV + RETR + 226 in a logged-in ftplib session
    import ftplib
    f = ftplib.FTP()
    f.connect("127.0.0.1", int(port), timeout=600)
    f.login(os.environ["GATE_USER"], os.environ["GATE_PASS"])
    f.voidcmd("TYPE I")
    buf, n = bytearray(1 << 20), 0
    t0, c0 = time.perf_counter(), time.process_time()
    conn = f.transfercmd("RETR obj.bin")
    while True:
        k = conn.recv_into(buf)
        if not k:
            break
        n += k
    conn.close()
    f.voidresp()
    t1, c1 = time.perf_counter(), time.process_time()
    f.quit()
    print(f"{t1 - t0:.4f} {c1 - c0:.3f} {n}")

op, key = sys.argv[1], sys.argv[2]
if op == "ftp":
    ftp_retr(key)
elif op == "put":
    s3.upload_file(sys.argv[3], bucket, key)
elif op == "fileobj":
    def f():
        with open("/dev/null", "wb") as out:
            s3.download_fileobj(bucket, key, out)
        return s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    timed(f)
elif op == "get1":
    timed(lambda: one_get(key))
PY
tool() { env -u AWS_CA_BUNDLE -u AWS_PROFILE S3_ENDPOINT="$ENDPOINT" S3_BUCKET="$BUCKET" \
    SRV_PID="$SRV_PID" GATE_USER="$GATE_USER" GATE_PASS="$GATE_PASS" python3 "$SCRATCH/tool.py" "$@"; }
tool put obj.bin "$SRC"
log "uploaded obj.bin ($SIZE_MIB MiB) with boto3"

# ---------------------------------------------------------------- ftpgates --
NAMES=()
declare -A PORT=() DESC=()
http=$(pick_port 29300)
for spec in $BENCH_GATES; do
    name=${spec%%=*}
    rest=${spec#*=}
    bin=${rest%%,*}
    keys=""
    [ "$rest" != "$bin" ] && keys=$(tr ',' '\n' <<<"${rest#*,}")
    [ -x "$bin" ] || die "$name: no binary at $bin"
    BIN=$SCRATCH/ftpgate-$name
    cp "$bin" "$BIN"
    port=$(pick_port 22400)
    http=$(pick_port "$http")
    start_gate "$name" "$port" "$http" "kind = \"s3\"
bucket = \"$BUCKET\"
endpoint = \"$ENDPOINT\"
force_path_style = true
allow_http = true
access_key_id = \"testing\"
secret_access_key = \"testing\"
$keys"
    NAMES+=("$name")
    PORT[$name]=$port
    DESC[$name]="$(basename "$bin") ($(sha256sum "$bin" | cut -c1-12))${keys:+, $(tr '\n' ' ' <<<"$keys")}"
    # Warm-up: one login (argon2, then cached) and one RETR.
    curl -s --fail --user "$GATE_USER:$GATE_PASS" -o "$SCRATCH/check" "ftp://127.0.0.1:$port/obj.bin"
    [ "$(sha256sum <"$SCRATCH/check" | cut -d' ' -f1)" = "$SRC_SHA" ] || die "$name: RETR differs from the source"
    rm -f "$SCRATCH/check"
    log "$name: RETR verified by sha256"
done

RAW=$SCRATCH/raw.tsv
printf 'contender\trun\tseconds\tMiB_s\tgate_cpu_s\tserver_cpu_s\tclient_cpu_s\tgate_peak_rss_mib\tserver_requests\n' >"$RAW"
lines() { if [ "$SRV_NAME" = moto ]; then moto_lines; else echo 0; fi; }
# Requests for the object itself (the gateways' periodic backend checks and other LISTs of
# the bucket would count otherwise).
requests_since() {
    if [ "$SRV_NAME" = moto ]; then
        moto_requests "$BUCKET" "$(($1 + 1))" | awk -v t="/$BUCKET/obj.bin" '$2 == t' | wc -l
    else echo -; fi
}
row() { # name run seconds gate_cpu server_cpu client_cpu rss requests
    local mibs
    mibs=$(awk -v t="$3" -v m="$SIZE_MIB" 'BEGIN { printf "%.1f", m / t }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$mibs" "$4" "$5" "$6" "$7" "$8" >>"$RAW"
    log "$(printf '%-10s run %s: %7s MiB/s  CPU gate %s s, %s %s s, client %s s; gate peak %s MiB; %s requests' \
        "$1" "$2" "$mibs" "$4" "$SRV_NAME" "$5" "$6" "$7" "$8")"
}
run_gate() { # name run
    local name=$1 pid=${GATE_PID[$1]} g0 m0 l0 r c0 c1 secs ccpu n
    reset_hwm "$pid"
    l0=$(lines); g0=$(cpu_ticks "$pid"); m0=$(cpu_ticks "$SRV_PID")
    c0=$(cpu_ticks $$)
    if [ "$FTP_CLIENT" = ftplib ]; then
        read -r secs ccpu n <<<"$(tool ftp "${PORT[$name]}")"
        r="$secs $n"
    else
        r=$(curl -s --fail --max-time "$MAXTIME" --user "$GATE_USER:$GATE_PASS" -o /dev/null \
            -w '%{time_total} %{size_download}' "ftp://127.0.0.1:${PORT[$name]}/obj.bin")
    fi
    c1=$(cpu_ticks $$)
    [ "${r#* }" = "$BYTES" ] || die "$name: RETR returned ${r#* } bytes"
    local client
    client=$(ticks_to_s "$c0" "$c1")
    [ "$FTP_CLIENT" = ftplib ] && client=$ccpu
    row "$name" "$2" "${r%% *}" "$(ticks_to_s "$g0" "$(cpu_ticks "$pid")")" \
        "$(ticks_to_s "$m0" "$(cpu_ticks "$SRV_PID")")" "$client" \
        "$(mib "$(kib "$pid" VmHWM)")" "$(requests_since "$l0")"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
run_boto() { # name op run
    local l0 wall cpu srv n
    l0=$(lines)
    read -r wall cpu srv n <<<"$(tool "$2" obj.bin)"
    [ "$n" = "$BYTES" ] || die "$1 moved $n bytes"
    row "$1" "$3" "$wall" - "$srv" "$cpu" - "$(requests_since "$l0")"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date -u '+%Y-%m-%d %H:%M')
CONTENDERS=("${NAMES[@]}" boto3-fileobj boto3-1get)
for run in $(seq 1 "$RUNS"); do
    n=${#CONTENDERS[@]}
    for i in $(seq 0 $((n - 1))); do
        c=${CONTENDERS[$(((i + run - 1) % n))]}
        case "$c" in
            boto3-fileobj) run_boto "$c" fileobj "$run" ;;
            boto3-1get) run_boto "$c" get1 "$run" ;;
            *) run_gate "$c" "$run" ;;
        esac
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

col() { # contender column -> median ("-" when the column does not apply)
    local v
    v=$(awk -F'\t' -v c="$1" -v col="$2" 'NR > 1 && $1 == c && $col != "-" { print $col }' "$RAW")
    if [ -z "$v" ]; then echo -; else median <<<"$v"; fi
}
per_gib() { awk -v s="$1" -v m="$SIZE_MIB" 'BEGIN { if (s == "" || s == "-") print "–"; else printf "%.2f", s * 1024 / m }'; }
FILEOBJ=$(col boto3-fileobj 4)
{
    echo "## S3 RETR, $SRV_NAME, $SIZE_MIB MiB, $T0 UTC"
    echo
    machine_note
    echo "- $RUNS runs per contender, order rotating, medians; FTP client $FTP_CLIENT; load average $LOAD_BEFORE before, $LOAD_AFTER after"
    for name in "${NAMES[@]}"; do echo "- \`$name\`: ${DESC[$name]}"; done
    echo
    echo "| contender | MiB/s | ÷ boto3 download_fileobj | ftpgate CPU s/GiB | $SRV_NAME CPU s/GiB | client CPU s/GiB | ftpgate peak RSS MiB | S3 requests |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${CONTENDERS[@]}"; do
        m=$(col "$c" 4)
        printf '| %s | %s | %s× | %s | %s | %s | %s | %s |\n' "$c" "$m" \
            "$(awk -v a="$m" -v b="$FILEOBJ" 'BEGIN { printf "%.2f", a / b }')" \
            "$(per_gib "$(col "$c" 5)")" "$(per_gib "$(col "$c" 6)")" "$(per_gib "$(col "$c" 7)")" \
            "$(col "$c" 8)" "$(col "$c" 9)"
    done
    echo
    raw_details "$RAW"
} >"$OUT.tmp"
publish
