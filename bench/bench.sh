#!/usr/bin/env bash
# Side-by-side single-stream throughput: ftpgate (local backend), ftpgate (memory
# backend) and vsftpd, all on 127.0.0.1 and on the same tmpfs (/dev/shm), driven by
# curl. STOR and RETR of one large random file, BENCH_RUNS runs each, median reported.
#
#   bash bench/bench.sh
#
# Environment (all optional):
#   BENCH_SIZE_MIB   size of the test file in MiB            (default 1024)
#   BENCH_RUNS       runs per server and direction           (default 3)
#   BENCH_DIR        scratch directory, removed at exit      (default /dev/shm/ftpgate-bench)
#   BENCH_DATA_DIR   put the two server roots (ftpgate local, vsftpd) in a new
#                    directory under this one instead (e.g. /var/tmp for a disk run);
#                    the test file and everything else stay in BENCH_DIR
#   BENCH_OUT        where the results Markdown goes         (default bench/results-latest.md)
#   BENCH_TIMEOUT    curl --max-time per transfer, seconds   (default 300)
#   BENCH_PREFAULT_MIB  MiB written to tmpfs and deleted before each timed STOR
#                    (default 2 x size + 512; 0 disables; see below)
#   FTPGATE_BIN      use this binary and skip `cargo build`
#   VSFTPD           vsftpd binary                           (default /usr/sbin/vsftpd)
#
# Throughput = file size / (curl time_total - time_pretransfer): the data phase of the
# transfer up to the server's final 226 reply (so ftpgate's fsync + rename on STOR is
# included), without connect + login (ftpgate's argon2 check would otherwise cost the
# short runs a noticeable share). curl's own speed_upload/speed_download (whole-session
# averages) are kept in the raw log for comparison.
#
# Pre-faulting: this kind of VM (virtio-balloon with free page reporting) hands freed
# guest memory back to the host within seconds, and touching it again costs a host
# page fault per page: a 1 GiB write into tmpfs then runs at anything between 0.5 and
# 2.5 GB/s depending on how much of the memory it lands on is still backed. Writing
# and deleting a scratch file of BENCH_PREFAULT_MIB just before each timed STOR makes
# the upload land on backed memory: the spread of vsftpd's STOR runs went from 6x
# (270-1680 MiB/s) to under 2x. RETR allocates little and is not pre-faulted.
#
# Runs are interleaved (run 1 of every server, then run 2, ...) so that background
# load on the machine spreads over all servers rather than hitting one.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
SCRATCH=${BENCH_DIR:-/dev/shm/ftpgate-bench}
OUT=${BENCH_OUT:-$REPO/bench/results-latest.md}
MAXTIME=${BENCH_TIMEOUT:-300}
PREFAULT_MIB=${BENCH_PREFAULT_MIB:-$((2 * SIZE_MIB + 512))}
VSFTPD=${VSFTPD:-/usr/sbin/vsftpd}
USER_NAME=bench
USER_PASS=secret

NAME=bench
# log/die, the cleanup trap (kills what it started, removes SCRATCH and CLEANUP_DIRS),
# build_bin, pick_port, spawn, wait_ftp: shared with the other benchmarks.
. "$REPO/bench/lib.sh"
command -v curl >/dev/null || die "curl is required"
command -v sha256sum >/dev/null || die "sha256sum is required"
command -v python3 >/dev/null || die "python3 is required (vsftpd CPU accounting)"
[ -x "$VSFTPD" ] || die "vsftpd not found at $VSFTPD (apt-get install -y vsftpd)"
[ "$(id -u)" = 0 ] || die "must run as root (vsftpd anonymous mode needs it)"

declare -A SPID=() # server name -> the processes whose CPU time we account

# ------------------------------------------------------------------ build --
build_bin
# ftpgate reads every FTPGATE_* environment variable as configuration and refuses unknown
# keys: FTPGATE_BIN must not reach it ("unknown field ... key `bin`").
export -n FTPGATE_BIN 2>/dev/null || true

# ----------------------------------------------------------------- scratch --
SRC=$SCRATCH/src/file.bin
if [ -n "${BENCH_DATA_DIR:-}" ]; then
    DATA=$(mktemp -d "$BENCH_DATA_DIR/ftpgate-bench.XXXXXX")
    CLEANUP_DIRS+=("$DATA")
    chmod 755 "$DATA"
else
    DATA=$SCRATCH
fi
DATA_FS=$(df --output=fstype "$DATA" | tail -1)
log "server roots in $DATA ($DATA_FS)"
mkdir -p "$SCRATCH/src" "$SCRATCH/logs" "$DATA/gate-local/upload"
BYTES=$((SIZE_MIB * 1024 * 1024))
log "generating a ${SIZE_MIB} MiB random file"
if command -v openssl >/dev/null; then
    openssl rand -out "$SRC" "$BYTES"
else
    head -c "$BYTES" /dev/urandom >"$SRC"
fi
[ "$(stat -c %s "$SRC")" = "$BYTES" ] || die "test file has the wrong size"
SRC_SHA=$(sha256sum "$SRC" | cut -d' ' -f1)

# vsftpd: anonymous root not writable, upload dir owned by `ftp`, empty chroot dir.
id ftp >/dev/null 2>&1 || useradd -r ftp
VS_ROOT=$DATA/vsftpd-root
mkdir -p "$VS_ROOT/upload" "$SCRATCH/vsftpd-empty"
chown ftp: "$VS_ROOT/upload"
chmod 755 "$VS_ROOT/upload"
chmod 555 "$VS_ROOT" "$SCRATCH/vsftpd-empty"

# ------------------------------------------------------------------- ports --
PORT_LOCAL=$(pick_port 22121)
PORT_MEM=$(pick_port 22131)
PORT_VS=$(pick_port 22141)
# vsftpd needs an explicit passive range; ftpgate uses OS-chosen ephemeral ports.
VS_PASV_MIN=$(pick_port 22200)
VS_PASV_MAX=$((VS_PASV_MIN + 20))

# ----------------------------------------------------------------- servers --
HASH=$(printf '%s' "$USER_PASS" | "$BIN" hash-password | tail -1)
[[ "$HASH" == '$argon2'* ]] || die "hash-password printed no PHC hash: $HASH"

gate_config() { # port kind root
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
[storage]
kind = "$2"
root = "$3"
[log]
level = "warn"
[[users]]
name = "$USER_NAME"
password_hash = '$HASH'
EOF
}
gate_config "$PORT_LOCAL" local "$DATA/gate-local" >"$SCRATCH/gate-local.toml"
gate_config "$PORT_MEM" memory "$SCRATCH/gate-memory-unused" >"$SCRATCH/gate-memory.toml"

cat >"$SCRATCH/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$PORT_VS
background=NO
seccomp_sandbox=NO
secure_chroot_dir=$SCRATCH/vsftpd-empty
pasv_enable=YES
pasv_min_port=$VS_PASV_MIN
pasv_max_port=$VS_PASV_MAX
local_enable=NO
anonymous_enable=YES
anon_root=$VS_ROOT
no_anon_password=YES
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
xferlog_enable=NO
dirmessage_enable=NO
use_sendfile=YES
EOF

start_server() { # name port cmd...
    local name=$1 port=$2
    shift 2
    spawn "$name" "$@"
    local pid=$LAST_PID
    wait_ftp "$port" "$pid" "$name"
    log "$name ready on 127.0.0.1:$port (pid $pid)"
    SPID[$name]=$pid
}
start_server gate-local "$PORT_LOCAL" "$BIN" --config "$SCRATCH/gate-local.toml"
start_server gate-memory "$PORT_MEM" "$BIN" --config "$SCRATCH/gate-memory.toml"
# vsftpd runs each session as two processes, and the one doing the transfer can
# outlive its parent: it is then re-parented to init and its CPU time never reaches
# the listener's cutime/cstime. (Making vsftpd init of a PID namespace instead
# crashes it: its SIGCHLD handler dereferences NULL for a child it did not fork.)
# A small child-subreaper wrapper adopts and reaps such orphans, so listener +
# wrapper together account for all of vsftpd's CPU time (bench/subreaper.py).
start_server vsftpd "$PORT_VS" python3 bench/subreaper.py "$VSFTPD" "$SCRATCH/vsftpd.conf"
SPID[vsftpd]="$(pgrep -P "${SPID[vsftpd]}" | head -1) ${SPID[vsftpd]}"
[ "$(wc -w <<<"${SPID[vsftpd]}")" = 2 ] || die "cannot find the vsftpd listener process"

# ------------------------------------------------------------------- runs --
SERVERS=(gate-local gate-memory vsftpd)
declare -A LABEL=(
    [gate-local]="ftpgate (local backend)"
    [gate-memory]="ftpgate (memory backend)"
    [vsftpd]="vsftpd $("$VSFTPD" -v 0>&1 2>&1 | sed -n 's/.*version //p' | head -1)"
)
declare -A URL=(
    [gate-local]="ftp://127.0.0.1:$PORT_LOCAL"
    [gate-memory]="ftp://127.0.0.1:$PORT_MEM"
    [vsftpd]="ftp://127.0.0.1:$PORT_VS"
)
declare -A CRED=(
    [gate-local]="$USER_NAME:$USER_PASS"
    [gate-memory]="$USER_NAME:$USER_PASS"
    [vsftpd]="anonymous:"
)
# Where a server's /upload lives on disk (none for the memory backend).
declare -A DISK=(
    [gate-local]="$DATA/gate-local/upload"
    [gate-memory]=""
    [vsftpd]="$VS_ROOT/upload"
)
RAW=$SCRATCH/raw.tsv
printf 'server\top\trun\tbytes\ttime_total\ttime_pretransfer\tcurl_speed\tMiB_s\tserver_cpu_s\tcurl_cpu_s\n' >"$RAW"

# curl's defaults: passive mode (EPSV, which all three servers accept), binary, one
# control connection per transfer.
CURL=(curl --silent --show-error --fail --max-time "$MAXTIME")

# Prints "time_total time_pretransfer speed" for one transfer.
do_stor() { # server remote-name
    "${CURL[@]}" --user "${CRED[$1]}" --ftp-create-dirs -T "$SRC" \
        -w '%{time_total} %{time_pretransfer} %{speed_upload}\n' -o /dev/null \
        "${URL[$1]}/upload/$2"
}
do_retr() { # server remote-name
    "${CURL[@]}" --user "${CRED[$1]}" \
        -w '%{time_total} %{time_pretransfer} %{speed_download}\n' -o /dev/null \
        "${URL[$1]}/upload/$2"
}
do_dele() { # server remote-name
    if [ -n "${DISK[$1]}" ]; then
        rm -f "${DISK[$1]}/$2"
    else
        "${CURL[@]}" --user "${CRED[$1]}" -Q "DELE /upload/$2" -o /dev/null "${URL[$1]}/"
    fi
}
# CPU accounting: the server's utime+stime (plus reaped children: vsftpd runs each
# session in child processes) from /proc, and curl's from the shell's `times`.
TCK=$(getconf CLK_TCK)
server_ticks() { # pids...
    local p
    for p in "$@"; do cat "/proc/$p/stat"; done | awk '{ t += $14 + $15 + $16 + $17 } END { print t }'
}
# Waits (up to 5 s) until the session processes are reaped: the first pid (the
# listener) has no children and the others (vsftpd's wrapper) only the first.
settle() { # pids...
    local i first=$1
    shift
    for i in $(seq 1 100); do
        if ! pgrep -P "$first" >/dev/null \
            && [ -z "$(for p in "$@"; do pgrep -P "$p"; done | grep -vx "$first")" ]; then
            return 0
        fi
        sleep 0.05
    done
}
# `times` must run in this shell (not a subshell) to see the curl processes it reaped.
children_secs() {
    times >"$SCRATCH/times"
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$SCRATCH/times"
}
# Runs one timed transfer and records it: measure SERVER OP RUN do_stor|do_retr NAME
measure() {
    local s=$1 op=$2 run=$3 fn=$4 name=$5 pid t0 t1 c0 c1 r
    pid=${SPID[$s]}
    t0=$(server_ticks $pid)
    children_secs >"$SCRATCH/c0"
    r=$("$fn" "$s" "$name")
    children_secs >"$SCRATCH/c1"
    c0=$(cat "$SCRATCH/c0")
    c1=$(cat "$SCRATCH/c1")
    settle $pid
    t1=$(server_ticks $pid)
    record "$s" "$op" "$run" "$r" "$(awk -v a="$t0" -v b="$t1" -v h="$TCK" 'BEGIN { printf "%.2f", (b - a) / h }')" \
        "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
}
record() { # server op run "total pre speed" server_cpu curl_cpu
    local total pre speed mibs
    read -r total pre speed <<<"$4"
    mibs=$(awk -v b="$BYTES" -v t="$total" -v p="$pre" \
        'BEGIN { d = t - p; if (d <= 0) d = t; printf "%.1f", b / d / 1048576 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$BYTES" "$total" "$pre" "$speed" "$mibs" "$5" "$6" >>"$RAW"
    log "$(printf '%-12s %s run %s: %8s MiB/s  (total %ss, pre-transfer %ss; CPU server %ss, curl %ss)' "$1" "$2" "$3" "$mibs" "$total" "$pre" "$5" "$6")"
}
verify() { # server remote-name
    local got
    if [ -n "${DISK[$1]}" ]; then
        got=$(sha256sum "${DISK[$1]}/$2" | cut -d' ' -f1)
    else
        got=$("${CURL[@]}" --user "${CRED[$1]}" "${URL[$1]}/upload/$2" | sha256sum | cut -d' ' -f1)
    fi
    [ "$got" = "$SRC_SHA" ] || die "$1: sha256 of the stored /upload/$2 is $got, expected $SRC_SHA"
    log "$1: sha256 of /upload/$2 matches"
}

prefault() {
    [ "$PREFAULT_MIB" -gt 0 ] || return 0
    dd if=/dev/zero of="$SCRATCH/prefault" bs=1M count="$PREFAULT_MIB" status=none
    rm -f "$SCRATCH/prefault"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before runs: $LOAD_BEFORE"

# Warm-up: one small transfer per server (connect, login, first data connection).
head -c 1048576 "$SRC" >"$SCRATCH/src/warm.bin"
for s in "${SERVERS[@]}"; do
    "${CURL[@]}" --user "${CRED[$s]}" --ftp-create-dirs -T "$SCRATCH/src/warm.bin" -o /dev/null "${URL[$s]}/upload/warm.bin"
    "${CURL[@]}" --user "${CRED[$s]}" -o /dev/null "${URL[$s]}/upload/warm.bin"
done

# STOR: each run uploads a new name; the first is verified and kept for the RETR
# runs, the others are deleted so memory use stays flat.
for run in $(seq 1 "$RUNS"); do
    for s in "${SERVERS[@]}"; do
        prefault
        measure "$s" STOR "$run" do_stor "stor-$run.bin"
        if [ "$run" = 1 ]; then
            verify "$s" stor-1.bin
        else
            do_dele "$s" "stor-$run.bin"
        fi
    done
done

# RETR of the file stored by the first STOR run (for the memory backend too).
for run in $(seq 1 "$RUNS"); do
    for s in "${SERVERS[@]}"; do
        measure "$s" RETR "$run" do_retr stor-1.bin
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after runs: $LOAD_AFTER"

# ----------------------------------------------------------------- report --
median() { # server op column
    awk -F'\t' -v s="$1" -v o="$2" -v c="$3" '$1 == s && $2 == o { print $c }' "$RAW" \
        | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
runs_of() { # server op
    awk -F'\t' -v s="$1" -v o="$2" '$1 == s && $2 == o { printf "%s%s", sep, $8; sep = " / " }' "$RAW"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
per_gib() { awk -v c="$1" -v b="$BYTES" 'BEGIN { printf "%.2f", c / (b / 1073741824) }'; }
psi() { sed -n 's/^some avg10=\([0-9.]*\) avg60=\([0-9.]*\).*/\1 (10 s), \2 (60 s)/p' /proc/pressure/cpu 2>/dev/null || echo n/a; }

VS_STOR=$(median vsftpd STOR 8)
VS_RETR=$(median vsftpd RETR 8)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
GIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- src backends Cargo.toml Cargo.lock 2>/dev/null)" ] \
    || [ -n "$(git -C "$REPO" ls-files --others --exclude-standard -- src backends 2>/dev/null)" ]; then
    GIT+=" + uncommitted changes in src/ or backends/"
fi
OTHER_RUSTC=$(pgrep -c -x rustc || true)

{
    echo "## Results $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Host: $(nproc) CPUs ($CPU), $MEM RAM, kernel $(uname -r)"
    echo "- Client: $(curl --version | head -1 | cut -d' ' -f1-2); file: ${SIZE_MIB} MiB random, read from tmpfs; server roots on $DATA_FS ($DATA); $RUNS runs each, interleaved, median; pre-fault before STOR: ${PREFAULT_MIB} MiB"
    echo "- Servers: ftpgate commit $GIT; $("$VSFTPD" -v 0>&1 2>&1 | head -1 | sed 's/: version/ version/')"
    echo "- Background load: load average $LOAD_BEFORE before, $LOAD_AFTER after; CPU pressure (PSI some) at the end $(psi); rustc processes at the end: $OTHER_RUSTC"
    echo
    echo "| server | STOR MiB/s | STOR vs vsftpd | RETR MiB/s | RETR vs vsftpd | server CPU s/GiB STOR / RETR | curl CPU s/GiB STOR / RETR |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for s in "${SERVERS[@]}"; do
        st=$(median "$s" STOR 8)
        rt=$(median "$s" RETR 8)
        echo "| ${LABEL[$s]} | $st | $(ratio "$st" "$VS_STOR") | $rt | $(ratio "$rt" "$VS_RETR") |" \
            "$(per_gib "$(median "$s" STOR 9)") / $(per_gib "$(median "$s" RETR 9)") |" \
            "$(per_gib "$(median "$s" STOR 10)") / $(per_gib "$(median "$s" RETR 10)") |"
    done
    echo
    echo "Per-run MiB/s, in run order:"
    echo
    for s in "${SERVERS[@]}"; do
        echo "- ${LABEL[$s]}: STOR $(runs_of "$s" STOR); RETR $(runs_of "$s" RETR)"
    done
    echo
    echo "MiB/s = size / (curl time_total − time_pretransfer): the data phase up to the 226 reply,"
    echo "without connect and login. CPU = median over runs of the server's (utime + stime, incl."
    echo "reaped session processes) and curl's CPU time during the transfer, per GiB moved."
    echo
    echo "<details><summary>raw timings</summary>"
    echo
    echo '```'
    column -t -s $'\t' "$RAW" 2>/dev/null || cat "$RAW"
    echo '```'
    echo
    echo "</details>"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "written to $OUT"
