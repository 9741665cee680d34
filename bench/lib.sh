# Shared boilerplate for the issue-7 benchmarks (small-files.sh, list-bench.sh,
# sha-bench.sh). Source it after setting SCRATCH (a directory under /dev/shm that is
# removed at exit) and NAME (the log prefix):
#
#   SCRATCH=/dev/shm/ftpgate-xyz NAME=xyz; . "$(dirname "$0")/lib.sh"
#
# Gives: log/die, a cleanup trap that kills every process started with `spawn` (by pid,
# never by name) and removes SCRATCH, `build_bin` (cargo build + a private copy of the
# binary: other engineers rebuild target/ while benchmarks run), `pick_port`,
# `start_gate NAME CONFIG PORT` (ftpgate with a given config, waits for 220),
# `start_vsftpd ROOT PORT`, `start_moto PORT` (request log in $SCRATCH/logs/moto.log),
# `random_file MIB`, `prefault`, `median`, `kib PID FIELD`, `reset_hwm PID`, `cpu_ticks PIDS...`, `machine_note`,
# `raw_details TSV`, `publish` ("$OUT.tmp" → $OUT).
set -euo pipefail

log() { printf '[%s] %s\n' "${NAME:-bench}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$SCRATCH" in
    /dev/shm/?*) ;;
    *) die "SCRATCH must be under /dev/shm (got $SCRATCH)" ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIDS=()
CLEANUP_DIRS=() # more directories to remove at exit (e.g. server roots on a disk)
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    [ -n "${KEEP_SCRATCH:-}" ] || rm -rf "$SCRATCH"
    for d in "${CLEANUP_DIRS[@]}"; do rm -rf "$d"; done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/logs"
chmod 755 "$SCRATCH"

# Builds (unless FTPGATE_BIN is set) and copies the binary into SCRATCH: sets BIN, GIT.
build_bin() {
    local src
    if [ -n "${FTPGATE_BIN:-}" ]; then
        src=$FTPGATE_BIN
    else
        log "cargo build --release -p ftpgate"
        (cd "$REPO" && cargo build --release -p ftpgate >&2)
        src=${CARGO_TARGET_DIR:-$REPO/target}/release/ftpgate
    fi
    [ -x "$src" ] || die "no ftpgate binary at $src"
    BIN=$SCRATCH/ftpgate
    cp "$src" "$BIN"
    GIT=$(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src backends Cargo.toml Cargo.lock 2>/dev/null || echo "+dirty")
    log "ftpgate binary from $src (tree $GIT)"
}

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
USED_PORTS=" "
pick_port() {
    local p=$1
    while ! port_free "$p" || [[ "$USED_PORTS" == *" $p "* ]]; do p=$((p + 1)); done
    USED_PORTS+="$p "
    echo "$p"
}

# Starts a command in the background with its output in $SCRATCH/logs/NAME.log.
spawn() { # name cmd...
    local name=$1
    shift
    "$@" >"$SCRATCH/logs/$name.log" 2>&1 </dev/null &
    PIDS+=("$!")
    LAST_PID=$!
}

wait_ftp() { # port pid name
    local i
    for i in $(seq 1 150); do
        kill -0 "$2" 2>/dev/null || { cat "$SCRATCH/logs/$3.log" >&2; die "$3 exited at start"; }
        if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 3 <&3" 2>/dev/null | grep -q 220; then
            return 0
        fi
        sleep 0.1
    done
    die "$3 did not answer on port $1"
}

GATE_USER=bench
GATE_PASS=secret
gate_hash() {
    [ -n "${GATE_HASH:-}" ] || GATE_HASH=$(printf '%s' "$GATE_PASS" | "$BIN" hash-password | tail -1)
    [[ "$GATE_HASH" == '$argon2'* ]] || die "hash-password printed no PHC hash"
    echo "$GATE_HASH"
}

# start_gate NAME PORT HTTP_PORT STORAGE_TOML [EXTRA_TOML]: sets GATE_PID[NAME].
declare -A GATE_PID=()
start_gate() {
    local name=$1 port=$2 http=$3 storage=$4 extra=${5:-}
    cat >"$SCRATCH/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
$extra
[http]
listen = "127.0.0.1:$http"
[storage]
$storage
[log]
level = "${GATE_LOG_LEVEL:-warn}"
[[users]]
name = "$GATE_USER"
password_hash = '$(gate_hash)'
EOF
    # shellcheck disable=SC2086 # GATE_ENV: extra VAR=value words, e.g. LD_PRELOAD=...
    # -u FTPGATE_BIN: ftpgate reads every FTPGATE_* variable as configuration and refuses
    # unknown keys, so the scripts' own FTPGATE_BIN must not reach it.
    spawn "$name" env -u FTPGATE_BIN ${GATE_ENV:-} "$BIN" --config "$SCRATCH/$name.toml"
    GATE_PID[$name]=$LAST_PID
    wait_ftp "$port" "$LAST_PID" "$name"
    log "$name ready on 127.0.0.1:$port (pid $LAST_PID, metrics on :$http)"
}

# start_vsftpd ROOT PORT: anonymous, uploads into ROOT/upload (owned by ftp). Sets VS_PID
# (the listener; it runs under a child-subreaper wrapper, see bench.sh).
start_vsftpd() {
    local root=$1 port=$2 pmin
    id ftp >/dev/null 2>&1 || useradd -r ftp
    mkdir -p "$root/upload" "$SCRATCH/vsftpd-empty"
    chown ftp: "$root/upload"
    chmod 755 "$root/upload"
    chmod 555 "$root" "$SCRATCH/vsftpd-empty"
    pmin=$(pick_port 23200)
    cat >"$SCRATCH/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$port
background=NO
seccomp_sandbox=NO
secure_chroot_dir=$SCRATCH/vsftpd-empty
pasv_enable=YES
pasv_min_port=$pmin
pasv_max_port=$((pmin + 200))
local_enable=NO
anonymous_enable=YES
anon_root=$root
no_anon_password=YES
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
xferlog_enable=NO
dirmessage_enable=NO
use_sendfile=YES
max_clients=200
max_per_ip=200
EOF
    spawn vsftpd python3 "$REPO/bench/subreaper.py" /usr/sbin/vsftpd "$SCRATCH/vsftpd.conf"
    VS_WRAP=$LAST_PID
    wait_ftp "$port" "$VS_WRAP" vsftpd
    VS_PID=$(pgrep -P "$VS_WRAP" | head -1)
    log "vsftpd ready on 127.0.0.1:$port (pid $VS_PID)"
}

# start_moto PORT: moto_server with its werkzeug request log (one line per request) in
# $SCRATCH/logs/moto.log. Sets MOTO_PID, ENDPOINT.
start_moto() {
    local port=$1 i
    spawn moto "${MOTO_SERVER:-moto_server}" -H 127.0.0.1 -p "$port"
    MOTO_PID=$LAST_PID
    ENDPOINT=http://127.0.0.1:$port
    for i in $(seq 1 150); do
        kill -0 "$MOTO_PID" 2>/dev/null || { cat "$SCRATCH/logs/moto.log" >&2; die "moto exited"; }
        curl -s -o /dev/null "$ENDPOINT/" && break
        sleep 0.2
    done
    log "moto ready on $ENDPOINT (pid $MOTO_PID)"
}
# Requests in moto's log for bucket $1 (lines "METHOD /bucket/..."), from line $2 on.
moto_requests() { # bucket [from-line]
    tail -n +"${2:-1}" "$SCRATCH/logs/moto.log" | awk -F'"' -v b="/$1" '
        { split($2, r, " "); t = r[2] }
        t == b || index(t, b "/") == 1 || index(t, b "?") == 1 { print r[1], t }'
}
moto_lines() { wc -l <"$SCRATCH/logs/moto.log"; }

# random_file MIB: $SCRATCH/file of MIB MiB of random bytes; sets BYTES and SRC_SHA.
random_file() {
    BYTES=$(($1 * 1048576))
    log "generating $1 MiB of random data"
    openssl rand -out "$SCRATCH/file" "$BYTES" 2>/dev/null || head -c "$BYTES" /dev/urandom >"$SCRATCH/file"
    SRC_SHA=$(sha256sum "$SCRATCH/file" | cut -d' ' -f1)
}
# prefault: writes and deletes PREFAULT_MIB on the tmpfs (before a timed STOR; bench.sh
# explains why).
prefault() {
    [ "${PREFAULT_MIB:-0}" -gt 0 ] || return 0
    dd if=/dev/zero of="$SCRATCH/prefault" bs=1M count="$PREFAULT_MIB" status=none
    rm -f "$SCRATCH/prefault"
}

median() { # numbers on stdin -> median
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; } # pid field -> kB
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }                      # VmHWM := VmRSS
TCK=$(getconf CLK_TCK)
cpu_ticks() { # pids... -> utime+stime+cutime+cstime
    local p
    for p in "$@"; do cat "/proc/$p/stat"; done | awk '{ t += $14 + $15 + $16 + $17 } END { print t + 0 }'
}
ticks_to_s() { awk -v a="$1" -v b="$2" -v h="$TCK" 'BEGIN { printf "%.2f", (b - a) / h }'; }
machine_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; } # ticks
machine_note() {
    echo "- Host: $(nproc) vCPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); **shared with other engineers' builds and tests**"
    echo "- ftpgate tree $GIT; $(rclone version 2>/dev/null | head -1); $(curl --version | head -1 | cut -d' ' -f1-2)"
}

# raw_details TSV: the raw table, aligned, in a collapsed <details> block.
raw_details() {
    echo "<details><summary>raw</summary>"
    echo
    echo '```'
    column -t -s $'\t' "$1"
    echo '```'
    echo
    echo "</details>"
}

# publish: the result written to "$OUT.tmp" becomes $OUT, is printed and logged.
publish() {
    mv "$OUT.tmp" "$OUT"
    cat "$OUT"
    log "written to $OUT"
}
