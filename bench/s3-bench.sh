#!/usr/bin/env bash
# ftpgate's S3 backend against a direct S3 client, both talking to the same moto server,
# everything on 127.0.0.1:
#
#   1. Throughput: STOR and RETR of one large random file through ftpgate (curl) and the
#      same transfer with boto3 (upload_file / download_fileobj with the default
#      TransferConfig: 8 MiB parts, 10 threads; plus a single streaming GET, which is
#      what ftpgate did for RETR before read_parallelism). BENCH_RUNS runs each, interleaved, median,
#      ratio ftpgate / direct. The object stored by the first STOR is checked by sha256
#      through boto3.
#   2. Peak RSS of ftpgate (VmHWM from /proc/PID/status; ftpgate is restarted before each
#      phase so the high-water mark starts afresh) during one upload of BENCH_SIZE_MIB and
#      during BENCH_CONC concurrent uploads of BENCH_CONC_SIZE_MIB each (smaller, so
#      that moto, which keeps every object, does not need BENCH_CONC x 1 GiB).
#   3. moto's CPU time (and the whole machine's) per transfer: moto is a Python server
#      and bounds both paths.
#
#   bash bench/s3-bench.sh       # ~10 minutes; writes bench/s3-results-latest.md
#
# Environment (all optional):
#   BENCH_SIZE_MIB        file size for the throughput runs and the single upload (1024)
#   BENCH_RUNS            runs per path and direction                            (3)
#   BENCH_CONC            concurrent uploads in the RSS phase                    (20)
#   BENCH_CONC_SIZE_MIB   size of each concurrent upload                         (256)
#   BENCH_CONC_STAGGER    seconds between the starts of the concurrent uploads  (0.5)
#                         (see "Logins" below)
#   BENCH_PART_SIZE_MIB   ftpgate part_size_mib; unset = ftpgate's default (8)
#   BENCH_PARTS_IN_FLIGHT ftpgate max_parts_in_flight; unset = default (4)
#   BENCH_READ_PARALLELISM ftpgate read_parallelism; unset = default (8; 1 = one GET)
#   BENCH_READ_CHUNK_MIB  ftpgate read_chunk_mib; unset = default (8)
#   BENCH_DIR             scratch directory, removed at exit (/dev/shm/ftpgate-s3-bench)
#   BENCH_OUT             results Markdown          (bench/s3-results-latest.md)
#   BENCH_TIMEOUT         curl --max-time per transfer, seconds                 (900)
#   BENCH_PREFAULT_MIB    MiB written to tmpfs and deleted before each timed STOR
#                         (4096; 0 disables): moto faults in ~4-5 GiB per 1 GiB upload,
#                         see bench.sh on this VM's free page reporting
#   BENCH_GATE_ENV        extra environment for ftpgate, e.g.
#                         "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072"
#   FTPGATE_BIN           use this binary and skip `cargo build`
#   BENCH_S3              S3 server: moto (default) or s3s-fs                  (moto)
#   MOTO_SERVER           moto server command                          (moto_server)
#   S3S_FS                s3s-fs command                                    (s3s-fs)
#
# Needs curl, python3 with boto3 and moto[server] (pip install 'moto[server]' boto3).
#
# BENCH_S3=s3s-fs: instead of moto, s3s-fs (the file-system example server of the Rust
# s3s crate, `cargo install s3s-fs`; multi-threaded tokio/hyper, objects as files)
# with its root directory in the scratch directory, i.e. on tmpfs; the bucket is a
# directory created there. It does not saturate one core as moto does, so the ratios
# say more about ftpgate. Results go to bench/s3-results-s3s-fs-latest.md by default.
#   BENCH_S3=s3s-fs bash bench/s3-bench.sh   # ~4 minutes
#
# Throughput = size / time. ftpgate: curl's time_total, i.e. connect, login (argon2,
# ~0.05 s), the transfer and the 226 reply after CompleteMultipartUpload. Not
# time_total - time_pretransfer as in bench.sh: curl's pre-transfer phase ends only
# after the 150 reply to RETR, which ftpgate sends once the GET to S3 has answered, and
# moto reads the whole object before it answers, so most of a RETR would go uncounted.
# boto3: the wall time of the upload_file / download_fileobj /
# get_object+read call in an already connected client (imports and client set-up are
# outside). CPU: utime+stime from /proc of ftpgate and moto over the transfer, the
# client's own (curl via `times`, boto3 via process_time), and the machine's busy time
# from /proc/stat; "others" = machine - (ftpgate + moto + client) is the background load.
#
# Logins: ftpgate verifies passwords with argon2id (m = 19 MiB) on tokio's blocking pool.
# Simultaneous logins run on separate threads, each gets its own glibc arena, and the
# 19 MiB stay resident afterwards: 20 logins at the same instant leave ~400 MiB of RSS
# that has nothing to do with uploads. The concurrent uploads are therefore started
# BENCH_CONC_STAGGER s apart (logins one at a time, all uploads still overlapping), and
# the login burst is measured on its own as a separate row. To make all uploads overlap
# nonetheless, each curl uploads from a pipe that stays empty until the last one has
# logged in and sent STOR; then all of them start streaming at once.
#
# STOR runs alternate which path goes first (odd runs ftpgate, even runs boto3).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

SRV_NAME=${BENCH_S3:-moto}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
CONC=${BENCH_CONC:-20}
CONC_SIZE_MIB=${BENCH_CONC_SIZE_MIB:-256}
STAGGER=${BENCH_CONC_STAGGER:-0.5}
SCRATCH=${BENCH_DIR:-/dev/shm/ftpgate-s3-bench}
case "$SRV_NAME" in
    moto) OUT=${BENCH_OUT:-$REPO/bench/s3-results-latest.md} ;;
    s3s-fs) OUT=${BENCH_OUT:-$REPO/bench/s3-results-s3s-fs-latest.md} ;;
    *) printf '[s3-bench] error: BENCH_S3 must be moto or s3s-fs (got %s)\n' "$SRV_NAME" >&2; exit 1 ;;
esac
MAXTIME=${BENCH_TIMEOUT:-900}
MOTO=${MOTO_SERVER:-moto_server}
S3S=${S3S_FS:-s3s-fs}
PREFAULT_MIB=${BENCH_PREFAULT_MIB:-4096}
read -r -a GATE_ENV <<<"${BENCH_GATE_ENV:-}"
PART_MIB=${BENCH_PART_SIZE_MIB:-8}
IN_FLIGHT=${BENCH_PARTS_IN_FLIGHT:-4}
BOUND_MIB=$(((IN_FLIGHT + 1) * PART_MIB))
USER_NAME=bench
USER_PASS=secret
BUCKET=bench

NAME=s3-bench
# log/die, the cleanup trap (kills what `spawn` started, removes SCRATCH), build_bin,
# pick_port: shared with the other benchmarks.
. "$REPO/bench/lib.sh"
command -v curl >/dev/null || die "curl is required"
if [ "$SRV_NAME" = moto ]; then
    command -v "$MOTO" >/dev/null || die "$MOTO not found (pip install 'moto[server]' boto3)"
else
    command -v "$S3S" >/dev/null || die "$S3S not found (cargo install s3s-fs)"
fi
python3 -c 'import boto3' 2>/dev/null || die "python3 cannot import boto3 (pip install boto3)"

# ------------------------------------------------------------------ build --
# A private copy in SCRATCH (build_bin), so that a concurrent `cargo build` cannot swap
# the binary between the restarts of one run.
build_bin
SRC=$SCRATCH/file.bin
CONC_SRC=$SCRATCH/conc.bin
BYTES=$((SIZE_MIB * 1024 * 1024))
CONC_BYTES=$((CONC_SIZE_MIB * 1024 * 1024))
log "generating a ${SIZE_MIB} MiB random file"
if command -v openssl >/dev/null; then
    openssl rand -out "$SRC" "$BYTES"
else
    head -c "$BYTES" /dev/urandom >"$SRC"
fi
[ "$(stat -c %s "$SRC")" = "$BYTES" ] || die "test file has the wrong size"
head -c "$CONC_BYTES" /dev/urandom >"$CONC_SRC"
SRC_SHA=$(sha256sum "$SRC" | cut -d' ' -f1)

# ------------------------------------------------------------------- ports --
SRV_PORT=$(pick_port 25100)
GATE_PORT=$(pick_port 22321)
ENDPOINT=http://127.0.0.1:$SRV_PORT
URL=ftp://127.0.0.1:$GATE_PORT

# ------------------------------------------------------------- S3 server --
if [ "$SRV_NAME" = moto ]; then
    # moto keeps each object in a SpooledTemporaryFile: values above ~5 MiB go to an
    # unlinked file in $TMPDIR (here /tmp, i.e. page cache); nothing survives its exit.
    "$MOTO" -H 127.0.0.1 -p "$SRV_PORT" >"$SCRATCH/logs/server.log" 2>&1 </dev/null &
else
    # s3s-fs stores objects as files under its root (here on tmpfs, removed at exit).
    mkdir -p "$SCRATCH/s3root/$BUCKET"
    "$S3S" --host 127.0.0.1 --port "$SRV_PORT" --access-key testing --secret-key testing \
        "$SCRATCH/s3root" >"$SCRATCH/logs/server.log" 2>&1 </dev/null &
fi
SRV_PID=$!
PIDS+=("$SRV_PID")
for i in $(seq 1 150); do
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$SCRATCH/logs/server.log" >&2; die "$SRV_NAME exited at start"; }
    curl -s -o /dev/null --max-time 2 "$ENDPOINT/" && break
    [ "$i" = 150 ] && die "$SRV_NAME did not answer on $ENDPOINT"
    sleep 0.1
done
if [ "$SRV_NAME" = moto ]; then
    # The shim execs into python: the pid must be the server itself (for its CPU time).
    grep -qa python "/proc/$SRV_PID/cmdline" || die "pid $SRV_PID is not the moto python process"
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$ENDPOINT/$BUCKET")" = 200 ] || die "cannot create bucket"
else
    grep -qa s3s-fs "/proc/$SRV_PID/cmdline" || die "pid $SRV_PID is not s3s-fs"
fi
log "$SRV_NAME ready on $ENDPOINT (pid $SRV_PID), bucket $BUCKET"

# boto3 helper: one process per call; prints timings of the transfer itself.
cat >"$SCRATCH/s3tool.py" <<'PY'
import hashlib, os, sys, time
import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
bucket = os.environ["S3_BUCKET"]
srv_pid = os.environ["SRV_PID"]

def busy():  # machine busy ticks: user nice system irq softirq steal
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]

def ticks(pid):  # utime + stime
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    v = s[s.rindex(")") + 2:].split()
    return int(v[11]) + int(v[12])

def timed(fn):
    s3.head_bucket(Bucket=bucket)  # connect first
    b0, m0, c0, t0 = busy(), ticks(srv_pid), time.process_time(), time.perf_counter()
    n = fn()
    t1, c1, m1, b1 = time.perf_counter(), time.process_time(), ticks(srv_pid), busy()
    hz = os.sysconf("SC_CLK_TCK")
    print(f"{t1 - t0:.4f} {c1 - c0:.3f} {(m1 - m0) / hz:.2f} {(b1 - b0) / hz:.2f} {n}")

def get_stream():
    n = 0
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        n += len(chunk)
    return n

op = sys.argv[1]
if op == "put":  # put SRC KEY: upload_file, default TransferConfig
    src, key = sys.argv[2:4]
    timed(lambda: (s3.upload_file(src, bucket, key), os.path.getsize(src))[1])
elif op == "get":  # get KEY: download_fileobj (ranged, threaded), default TransferConfig
    key = sys.argv[2]
    with open("/dev/null", "wb") as f:  # not download_file: it would rename onto /dev/null
        timed(lambda: (s3.download_fileobj(bucket, key, f), s3.head_object(Bucket=bucket, Key=key)["ContentLength"])[1])
elif op == "get1":  # get1 KEY: one GET, body streamed in 1 MiB chunks (as ftpgate reads)
    key = sys.argv[2]
    timed(get_stream)
elif op == "sha":
    h = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=sys.argv[2])["Body"].iter_chunks(1 << 20):
        h.update(chunk)
    print(h.hexdigest())
elif op == "size":
    for k in sys.argv[2:]:
        print(k, s3.head_object(Bucket=bucket, Key=k)["ContentLength"])
elif op == "del":
    for k in sys.argv[2:]:
        s3.delete_object(Bucket=bucket, Key=k)
else:
    sys.exit(f"unknown op {op}")
PY
s3tool() { env -u AWS_CA_BUNDLE -u AWS_PROFILE S3_ENDPOINT="$ENDPOINT" S3_BUCKET="$BUCKET" SRV_PID="$SRV_PID" \
    python3 "$SCRATCH/s3tool.py" "$@"; }

# ---------------------------------------------------------------- ftpgate --
HASH=$(printf '%s' "$USER_PASS" | "$BIN" hash-password | tail -1)
[[ "$HASH" == '$argon2'* ]] || die "hash-password printed no PHC hash: $HASH"
{
    cat <<EOF
[server]
listen = "127.0.0.1:$GATE_PORT"
max_sessions_per_ip = 100
[storage]
kind = "s3"
bucket = "$BUCKET"
endpoint = "$ENDPOINT"
force_path_style = true
allow_http = true
access_key_id = "testing"
secret_access_key = "testing"
EOF
    [ -n "${BENCH_PART_SIZE_MIB:-}" ] && echo "part_size_mib = $PART_MIB"
    [ -n "${BENCH_PARTS_IN_FLIGHT:-}" ] && echo "max_parts_in_flight = $IN_FLIGHT"
    [ -n "${BENCH_READ_PARALLELISM:-}" ] && echo "read_parallelism = $BENCH_READ_PARALLELISM"
    [ -n "${BENCH_READ_CHUNK_MIB:-}" ] && echo "read_chunk_mib = $BENCH_READ_CHUNK_MIB"
    cat <<EOF
[log]
level = "warn"
[[users]]
name = "$USER_NAME"
password_hash = '$HASH'
EOF
} >"$SCRATCH/gate.toml"

GW_PID=
GATE_N=0
# (Re)starts ftpgate so that VmHWM starts afresh, then logs in once (LIST) so that the
# baseline contains one argon2 verification, as every measured phase does.
restart_gate() {
    if [ -n "$GW_PID" ]; then
        kill "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
    fi
    GATE_N=$((GATE_N + 1))
    # (FTPGATE_* variables are configuration for ftpgate: keep ours out.)
    env -u FTPGATE_BIN "${GATE_ENV[@]}" "$BIN" --config "$SCRATCH/gate.toml" >"$SCRATCH/logs/gate-$GATE_N.log" 2>&1 </dev/null &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_ftp "$GATE_PORT" "$GW_PID" "gate-$GATE_N"
    "${CURL[@]}" --user "$USER_NAME:$USER_PASS" -o /dev/null "$URL/"
    sleep 0.3
}
idle_rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$GW_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; } # peak RSS := current

CURL=(curl --silent --show-error --fail --max-time "$MAXTIME")
TCK=$(getconf CLK_TCK)
proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
busy_ticks() { awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
secs() { awk -v a="$1" -v b="$2" -v h="$TCK" 'BEGIN { printf "%.2f", (b - a) / h }'; }
# `times` must run in this shell to see the curl processes it reaped.
children_secs() {
    times >"$SCRATCH/times"
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$SCRATCH/times"
}

RAW=$SCRATCH/raw.tsv
printf 'path\top\trun\tbytes\tseconds\tMiB_s\tftpgate_cpu_s\tserver_cpu_s\tclient_cpu_s\tmachine_busy_s\tothers_s\n' >"$RAW"
record() { # path op run bytes seconds gate_cpu server_cpu client_cpu busy
    local mibs others
    mibs=$(awk -v b="$4" -v t="$5" 'BEGIN { printf "%.1f", b / t / 1048576 }')
    others=$(awk -v b="$9" -v g="$6" -v m="$7" -v c="$8" 'BEGIN { o = b - g - m - c; printf "%.2f", o < 0 ? 0 : o }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$mibs" "$6" "$7" "$8" "$9" "$others" >>"$RAW"
    log "$(printf '%-9s %-4s run %s: %7s MiB/s in %6ss  CPU ftpgate %ss, %s %ss, client %ss, machine %ss' \
        "$1" "$2" "$3" "$mibs" "$5" "$6" "$SRV_NAME" "$7" "$8" "$9")"
}
# ftp OP RUN: one curl transfer through ftpgate (STOR: stor-RUN.bin; RETR: stor-1.bin).
ftp() {
    local op=$1 run=$2 g0 m0 b0 c0 c1 r total pre
    g0=$(proc_ticks "$GW_PID"); m0=$(proc_ticks "$SRV_PID"); b0=$(busy_ticks)
    children_secs >"$SCRATCH/c0"
    if [ "$op" = STOR ]; then
        r=$("${CURL[@]}" --user "$USER_NAME:$USER_PASS" -T "$SRC" -o /dev/null \
            -w '%{time_total} %{time_pretransfer}' "$URL/stor-$run.bin")
    else
        r=$("${CURL[@]}" --user "$USER_NAME:$USER_PASS" -o /dev/null \
            -w '%{time_total} %{time_pretransfer} %{size_download}' "$URL/stor-1.bin")
        [ "$(cut -d' ' -f3 <<<"$r")" = "$BYTES" ] || die "RETR returned $(cut -d' ' -f3 <<<"$r") bytes"
    fi
    children_secs >"$SCRATCH/c1"
    local b1 m1 g1
    b1=$(busy_ticks); m1=$(proc_ticks "$SRV_PID"); g1=$(proc_ticks "$GW_PID")
    read -r total pre _ <<<"$r"
    c0=$(cat "$SCRATCH/c0"); c1=$(cat "$SCRATCH/c1")
    record ftpgate "$op" "$run" "$BYTES" "$total" \
        "$(secs "$g0" "$g1")" "$(secs "$m0" "$m1")" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')" \
        "$(secs "$b0" "$b1")"
}
# direct PATH OP RUN tool-args...: one boto3 transfer.
direct() {
    local path=$1 op=$2 run=$3 wall cpu srv busy n
    shift 3
    read -r wall cpu srv busy n <<<"$(s3tool "$@")"
    [ "$n" = "$BYTES" ] || die "$path $op moved $n bytes, expected $BYTES"
    record "$path" "$op" "$run" "$BYTES" "$wall" 0.00 "$srv" "$cpu" "$busy"
}

psi() { sed -n 's/^some avg10=\([0-9.]*\) avg60=\([0-9.]*\).*/\1 % (10 s), \2 % (60 s)/p' /proc/pressure/cpu 2>/dev/null || echo n/a; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PSI_BEFORE=$(psi)
RUSTC_BEFORE=$(pgrep -c -x rustc || true)
T_START=$(date -u '+%Y-%m-%d %H:%M')
log "load average before: $LOAD_BEFORE; CPU pressure $PSI_BEFORE; rustc processes: $RUSTC_BEFORE"

# ============================================================ throughput ==
restart_gate
log "ftpgate ready on $URL (pid $GW_PID); part size $PART_MIB MiB, $IN_FLIGHT parts in flight"
# Warm-up: a small file both ways, each path.
head -c 1048576 "$SRC" >"$SCRATCH/warm.bin"
"${CURL[@]}" --user "$USER_NAME:$USER_PASS" -T "$SCRATCH/warm.bin" "$URL/warm.bin"
"${CURL[@]}" --user "$USER_NAME:$USER_PASS" -o /dev/null "$URL/warm.bin"
s3tool put "$SCRATCH/warm.bin" warm-direct.bin >/dev/null
s3tool get warm-direct.bin >/dev/null

prefault() {
    [ "$PREFAULT_MIB" -gt 0 ] || return 0
    dd if=/dev/zero of="$SCRATCH/prefault" bs=1M count="$PREFAULT_MIB" status=none
    rm -f "$SCRATCH/prefault"
}
for run in $(seq 1 "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then
        prefault; ftp STOR "$run"
        prefault; direct boto3 STOR "$run" put "$SRC" "direct-$run.bin"
    else
        prefault; direct boto3 STOR "$run" put "$SRC" "direct-$run.bin"
        prefault; ftp STOR "$run"
    fi
    s3tool del "direct-$run.bin"
    if [ "$run" = 1 ]; then
        got=$(s3tool sha stor-1.bin)
        [ "$got" = "$SRC_SHA" ] || die "sha256 of stor-1.bin (stored through ftpgate) is $got, expected $SRC_SHA"
        log "sha256 of stor-1.bin read back by boto3 matches the source"
    else
        s3tool del "stor-$run.bin"
    fi
done
for run in $(seq 1 "$RUNS"); do
    ftp RETR "$run"
    direct boto3 RETR "$run" get stor-1.bin
    direct boto3-1get RETR "$run" get1 stor-1.bin
done
TP_HWM=$(kib "$GW_PID" VmHWM)
s3tool del warm.bin warm-direct.bin
LOAD_MID=$(cut -d' ' -f1-3 /proc/loadavg)

# ================================================================ memory ==
# Samples VmRSS of a pid every 0.2 s into a file until killed.
sampler() { while kill -0 "$1" 2>/dev/null; do awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null; sleep 0.2; done >"$2"; }
rss_median() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f", v[int((NR + 1) / 2)] / 1024; else print "n/a" }'; }
MEM=$SCRATCH/mem.tsv
printf 'phase\tuploads\tMiB_each\tidle_hwm_kib\tpeak_hwm_kib\tmedian_rss_mib\twall_s\tagg_MiB_s\tftpgate_cpu_s\tserver_cpu_s\tmachine_busy_s\tserver_hwm_kib\toverlap_s\n' >"$MEM"

# uploads N SRC BYTES STAGGER: N STORs of SRC in parallel (conc-I.bin), started STAGGER s
# apart, on a freshly started ftpgate; records the phase.
uploads() {
    local n=$1 src=$2 bytes=$3 stagger=$4 label=$5 i idle g0 m0 b0 t0 t1 pids=() rc=0 go=$SCRATCH/go-$5
    restart_gate
    idle=$(kib "$GW_PID" VmHWM)
    IDLE_RSS[$label]=$(idle_rss)
    reset_hwm "$SRV_PID"
    sampler "$GW_PID" "$SCRATCH/rss-$label" &
    local spid=$!
    PIDS+=("$spid")
    # Logins one at a time (stagger); the data waits for $go, so all uploads overlap.
    for i in $(seq 1 "$n"); do
        (
            { while [ ! -e "$go" ]; do sleep 0.05; done; cat "$src"; } \
                | "${CURL[@]}" --user "$USER_NAME:$USER_PASS" -T - -o /dev/null "$URL/conc-$label-$i.bin"
            date +%s.%N >"$SCRATCH/end-$label-$i"
        ) &
        pids+=("$!")
        PIDS+=("$!")
        sleep "$stagger"
    done
    sleep 0.5
    g0=$(proc_ticks "$GW_PID"); m0=$(proc_ticks "$SRV_PID"); b0=$(busy_ticks)
    t0=$(date +%s.%N)
    touch "$go"
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { rc=$?; log "upload $((i + 1)) of $label failed (curl exit $rc)"; }
    done
    t1=$(date +%s.%N)
    local b1 m1 g1 peak
    b1=$(busy_ticks); m1=$(proc_ticks "$SRV_PID"); g1=$(proc_ticks "$GW_PID")
    peak=$(kib "$GW_PID" VmHWM)
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true
    [ "$rc" = 0 ] || die "$label: an upload failed"
    local keys=() k
    for i in $(seq 1 "$n"); do keys+=("conc-$label-$i.bin"); done
    s3tool size "${keys[@]}" | while read -r k sz; do
        [ "$sz" = "$bytes" ] || die "$k has $sz bytes, expected $bytes"
    done
    s3tool del "${keys[@]}"
    # Time during which all N uploads were running at once (go to the first end).
    local overlap
    overlap=$(cat "$SCRATCH"/end-"$label"-* | awk -v s="$t0" '{ if (e == "" || $1 < e) e = $1 } END { printf "%.1f", e - s }')
    local wall
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "$((bytes / 1048576))" "$idle" "$peak" \
        "$(rss_median "$SCRATCH/rss-$label")" "$wall" \
        "$(awk -v n="$n" -v b="$bytes" -v w="$wall" 'BEGIN { printf "%.1f", n * b / w / 1048576 }')" \
        "$(secs "$g0" "$g1")" "$(secs "$m0" "$m1")" "$(secs "$b0" "$b1")" "$(kib "$SRV_PID" VmHWM)" "$overlap" >>"$MEM"
    log "$label: $n x $((bytes / 1048576)) MiB in ${wall}s; ftpgate VmHWM $(mib "$idle") MiB idle -> $(mib "$peak") MiB peak; all running together for ${overlap}s"
}
declare -A IDLE_RSS=()
uploads 1 "$SRC" "$BYTES" 0 one

# One RETR of the first object, on a fresh ftpgate.
restart_gate
RETR_IDLE=$(kib "$GW_PID" VmHWM)
IDLE_RSS[retr]=$(idle_rss)
"${CURL[@]}" --user "$USER_NAME:$USER_PASS" -o /dev/null "$URL/stor-1.bin"
RETR_PEAK=$(kib "$GW_PID" VmHWM)
s3tool del stor-1.bin
log "one RETR of ${SIZE_MIB} MiB: VmHWM $(mib "$RETR_IDLE") -> $(mib "$RETR_PEAK") MiB"
uploads "$CONC" "$CONC_SRC" "$CONC_BYTES" "$STAGGER" conc

# Login burst, no transfer: CONC simultaneous logins (LIST) on a fresh ftpgate.
restart_gate
BURST_IDLE=$(kib "$GW_PID" VmHWM)
IDLE_RSS[burst]=$(idle_rss)
bpids=()
for i in $(seq 1 "$CONC"); do
    "${CURL[@]}" --user "$USER_NAME:$USER_PASS" -o /dev/null "$URL/" &
    bpids+=("$!")
    PIDS+=("$!")
done
wait "${bpids[@]}"
BURST_PEAK=$(kib "$GW_PID" VmHWM)
BURST_RSS=$(kib "$GW_PID" VmRSS)
log "login burst: $CONC simultaneous logins: VmHWM $(mib "$BURST_IDLE") -> $(mib "$BURST_PEAK") MiB (VmRSS after: $(mib "$BURST_RSS") MiB)"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
PSI_AFTER=$(psi)
RUSTC_AFTER=$(pgrep -c -x rustc || true)

# ----------------------------------------------------------------- report --
median() { # path op column
    awk -F'\t' -v s="$1" -v o="$2" -v c="$3" '$1 == s && $2 == o { print $c }' "$RAW" \
        | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
runs_of() { awk -F'\t' -v s="$1" -v o="$2" '$1 == s && $2 == o { printf "%s%s", sep, $6; sep = " / " }' "$RAW"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
per_gib() { [ -z "$1" ] && { echo "–"; return; }; awk -v c="$1" -v b="$BYTES" 'BEGIN { printf "%.2f", c / (b / 1073741824) }'; }
# The S3 server's CPU share while busy: median over runs of its CPU s / wall s.
srv_util() {
    awk -F'\t' -v s="$1" -v o="$2" '$1 == s && $2 == o { print $8 / $5 }' "$RAW" | sort -n \
        | awk '{ v[NR] = $1 } END { if (NR) printf "%.0f %%", 100 * v[int((NR + 1) / 2)]; else print "–" }'
}
memrow() { awk -F'\t' -v p="$1" -v c="$2" '$1 == p { print $c }' "$MEM"; }

G_ST=$(median ftpgate STOR 6); G_RT=$(median ftpgate RETR 6)
D_ST=$(median boto3 STOR 6); D_RT=$(median boto3 RETR 6); D1_RT=$(median boto3-1get RETR 6)
ONE_IDLE=$(memrow one 4); ONE_PEAK=$(memrow one 5)
CONC_IDLE=$(memrow conc 4); CONC_PEAK=$(memrow conc 5)
INCR=$(awk -v a="$ONE_PEAK" -v b="$CONC_PEAK" -v n="$CONC" 'BEGIN { printf "%.1f", (b - a) / (n - 1) / 1024 }')
INCR0=$(awk -v a="$CONC_IDLE" -v b="$CONC_PEAK" -v n="$CONC" 'BEGIN { printf "%.1f", (b - a) / n / 1024 }')
ONE_ABOVE=$(awk -v a="${IDLE_RSS[one]}" -v b="$ONE_PEAK" 'BEGIN { printf "%.1f", (b - a) / 1024 }')
verdict() { awk -v v="$1" -v g="$2" -v dir="$3" 'BEGIN { ok = (dir == "ge") ? v >= g : v <= g; print ok ? "met" : "missed" }'; }
RATIO_ST=$(awk -v a="$G_ST" -v b="$D_ST" 'BEGIN { printf "%.2f", a / b }')
RATIO_RT=$(awk -v a="$G_RT" -v b="$D_RT" 'BEGIN { printf "%.2f", a / b }')
RATIO_RT1=$(awk -v a="$G_RT" -v b="$D1_RT" 'BEGIN { printf "%.2f", a / b }')

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEMTOTAL=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
if [ "$SRV_NAME" = moto ]; then
    VERSIONS=$(python3 -c "from importlib.metadata import version as v; import platform; print(f\"moto {v('moto')} (werkzeug {v('werkzeug')}, Python {platform.python_version()}), boto3 {v('boto3')} / botocore {v('botocore')}\")" 2>/dev/null || echo "moto/boto3 versions unknown")
else
    VERSIONS="$("$S3S" --version 2>/dev/null || echo "s3s-fs, version unknown") (root on tmpfs), $(python3 -c "from importlib.metadata import version as v; import platform; print(f\"boto3 {v('boto3')} / botocore {v('botocore')} (Python {platform.python_version()})\")" 2>/dev/null || echo "boto3 version unknown")"
fi
row() { # label path
    local st rt
    st=$(median "$2" STOR 6); rt=$(median "$2" RETR 6)
    printf '| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s |\n' "$1" \
        "${st:-–}" "$([ -n "$st" ] && ratio "$G_ST" "$st" || echo –)" "$rt" "$(ratio "$G_RT" "$rt")" \
        "$(per_gib "$(median "$2" STOR 8)")" "$(per_gib "$(median "$2" RETR 8)")" \
        "$(srv_util "$2" STOR)" "$(srv_util "$2" RETR)" \
        "$(per_gib "$(median "$2" STOR 7)")" "$(per_gib "$(median "$2" RETR 7)")" \
        "$(per_gib "$(median "$2" STOR 9)")" "$(per_gib "$(median "$2" RETR 9)")" \
        "$(per_gib "$(median "$2" STOR 11)")" "$(per_gib "$(median "$2" RETR 11)")"
}
{
    echo "## S3 results $T_START UTC"
    echo
    echo "- Host: $(nproc) CPUs ($CPU), $MEMTOTAL RAM, kernel $(uname -r)"
    echo "- ftpgate commit $GIT; part size $PART_MIB MiB, $IN_FLIGHT parts in flight (bound per upload $BOUND_MIB MiB)$([ -z "${BENCH_PART_SIZE_MIB:-}${BENCH_PARTS_IN_FLIGHT:-}" ] && echo ", the defaults")"
    echo "- S3: $VERSIONS, all on 127.0.0.1; $(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "- Files: ${SIZE_MIB} MiB random on tmpfs; $RUNS runs per path and direction, interleaved, median"
    echo "- Background load (other engineers' builds): load average $LOAD_BEFORE before, $LOAD_MID after the throughput runs, $LOAD_AFTER at the end; CPU pressure (PSI some) $PSI_BEFORE before, $PSI_AFTER at the end; rustc processes $RUSTC_BEFORE before, $RUSTC_AFTER at the end"
    echo
    echo "### Throughput (ftpgate vs a direct S3 client on the same $SRV_NAME)"
    echo
    echo "| path | STOR MiB/s | ftpgate / this | RETR MiB/s | ftpgate / this | $SRV_NAME CPU s/GiB STOR / RETR | $SRV_NAME CPU ÷ wall STOR / RETR | ftpgate CPU s/GiB STOR / RETR | client CPU s/GiB STOR / RETR | others' CPU s/GiB STOR / RETR |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    row "ftpgate (curl → ftpgate → $SRV_NAME)" ftpgate
    row "boto3 upload_file / download_fileobj (default TransferConfig)" boto3
    row "boto3 get_object, one streamed GET (RETR only)" boto3-1get
    echo
    echo "Per-run MiB/s in run order:"
    echo
    for p in ftpgate boto3 boto3-1get; do
        echo "- $p: STOR $(runs_of "$p" STOR); RETR $(runs_of "$p" RETR)"
    done
    echo
    echo "sha256 of the first object stored through ftpgate, read back with boto3: matches the source."
    echo "Peak RSS of ftpgate over the throughput runs ($RUNS STOR + $RUNS RETR of ${SIZE_MIB} MiB): $(mib "$TP_HWM") MiB."
    echo
    echo "### Peak RSS of ftpgate"
    echo
    echo "| phase | VmRSS idle | VmHWM idle (start + 1 login) | **VmHWM peak** | peak − idle VmRSS | median VmRSS during | wall s | aggregate MiB/s | ftpgate CPU s | $SRV_NAME CPU s | machine busy s | $SRV_NAME VmHWM |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in one conc; do
        awk -F'\t' -v p="$p" -v st="$STAGGER" -v rss="${IDLE_RSS[$p]}" '$1 == p {
            name = ($2 == 1) ? sprintf("1 upload of %d MiB", $3) : sprintf("%d concurrent uploads of %d MiB (logins %s s apart, then all streaming together for %s s)", $2, $3, st, $13)
            printf "| %s | %.1f MiB | %.1f MiB | **%.1f MiB** | %.1f MiB | %s MiB | %s | %s | %s | %s | %s | %.0f MiB |\n", name, rss / 1024, $4 / 1024, $5 / 1024, ($5 - rss) / 1024, $6, $7, $8, $9, $10, $11, $12 / 1024 }' "$MEM"
    done
    echo "| 1 download (RETR) of ${SIZE_MIB} MiB | $(mib "${IDLE_RSS[retr]}") MiB | $(mib "$RETR_IDLE") MiB | $(mib "$RETR_PEAK") MiB | $(awk -v a="${IDLE_RSS[retr]}" -v b="$RETR_PEAK" 'BEGIN { printf "%.1f", (b - a) / 1024 }') MiB | | | | | | | |"
    echo "| $CONC simultaneous logins, no transfer | $(mib "${IDLE_RSS[burst]}") MiB | $(mib "$BURST_IDLE") MiB | $(mib "$BURST_PEAK") MiB | $(awk -v a="${IDLE_RSS[burst]}" -v b="$BURST_PEAK" 'BEGIN { printf "%.1f", (b - a) / 1024 }') MiB | VmRSS after: $(mib "$BURST_RSS") MiB | | | | | | |"
    echo
    echo "Idle = ftpgate freshly started plus one login (LIST). Its VmHWM includes the 19 MiB of"
    echo "that argon2 verification; VmRSS shows whether glibc kept them resident afterwards."
    echo
    echo "Per-upload increment: (peak with $CONC − peak with 1) / $((CONC - 1)) = **$INCR MiB**;"
    echo "(peak with $CONC − idle) / $CONC = $INCR0 MiB. Documented bound per upload: ($IN_FLIGHT + 1) × $PART_MIB MiB = $BOUND_MIB MiB."
    echo
    echo "### Against the goals"
    echo
    echo "| goal | measured | |"
    echo "|---|---|---|"
    echo "| STOR ≥ 0.9× direct | ${RATIO_ST}× ($G_ST vs $D_ST MiB/s) | $(verdict "$RATIO_ST" 0.9 ge) |"
    echo "| RETR ≥ 0.9× direct | ${RATIO_RT}× vs download_fileobj ($G_RT vs $D_RT MiB/s); ${RATIO_RT1}× vs one streamed GET ($D1_RT MiB/s) | $(verdict "$RATIO_RT" 0.9 ge) / $(verdict "$RATIO_RT1" 0.9 ge) |"
    echo "| peak RSS ≤ 64 MiB for one upload | $(mib "$ONE_PEAK") MiB ($ONE_ABOVE MiB above idle VmRSS) | $(verdict "$(mib "$ONE_PEAK")" 64 le) |"
    echo "| growth ≤ $BOUND_MIB MiB per upload | $INCR MiB per upload (1 → $CONC) | $(verdict "$INCR" "$BOUND_MIB" le) |"
    echo
    echo "MiB/s: ftpgate = size / curl time_total (connect + login + transfer + final reply); boto3 ="
    if [ "$SRV_NAME" = moto ]; then
        echo "size / wall time of the transfer call in a connected client. CPU per GiB: medians over runs; \"moto CPU ÷ wall\" near 100 % means moto's"
        echo "Python process (GIL) is saturated. Others = machine busy − ftpgate − moto − client."
    else
        echo "size / wall time of the transfer call in a connected client. CPU per GiB: medians over runs; \"s3s-fs CPU ÷ wall\": 100 % = one"
        echo "core (s3s-fs is multi-threaded; this machine has $(nproc)). Others = machine busy − ftpgate − s3s-fs − client."
    fi
    echo "Concurrent phase: each upload is ${CONC_SIZE_MIB} MiB (not ${SIZE_MIB} MiB) so that $SRV_NAME, which keeps"
    echo "every object until it is deleted, needs ${CONC} × ${CONC_SIZE_MIB} MiB; objects are checked by size and deleted after the phase."
    echo "Before each timed STOR ${PREFAULT_MIB} MiB are written to tmpfs and deleted (pre-fault); STOR runs alternate which path goes first."
    [ ${#GATE_ENV[@]} -gt 0 ] && echo "ftpgate ran with the extra environment: ${GATE_ENV[*]}."
    echo
    echo "<details><summary>raw timings</summary>"
    echo
    echo '```'
    column -t -s $'\t' "$RAW" 2>/dev/null || cat "$RAW"
    echo
    column -t -s $'\t' "$MEM" 2>/dev/null || cat "$MEM"
    echo '```'
    echo
    echo "</details>"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "written to $OUT"
