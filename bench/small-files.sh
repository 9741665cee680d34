#!/usr/bin/env bash
# Many small files with rclone (issue 7): `rclone copy` of a tree of BENCH_FILES files of
# 1-64 KiB (random sizes, random bytes) in BENCH_DIRS directories, up to the server and
# back down, --transfers 8 --checkers 8, BENCH_RUNS runs, contenders interleaved within
# one invocation (the order alternates per run), medians.
#
#   bash bench/small-files.sh local   # ftpgate (local backend, root on tmpfs) vs vsftpd (same tmpfs)
#   bash bench/small-files.sh s3      # ftpgate (kind = "s3") on moto vs rclone's own S3 backend on the same moto
#
# Every run is verified: the sha256 of every file of the tree stored by the server (on
# disk for local/vsftpd) and of the tree downloaded back must equal the source's, else
# the script stops. A run writes a fresh directory (run-N), so rclone's checkers find an
# empty destination on the way up and an empty local directory on the way down.
#
# Also counted, per direction and contender: FTP commands by verb and backend calls by op
# (ftpgate's /metrics: ftpgate_commands_total, ftpgate_backend_operation_duration_seconds_count)
# and, in s3 mode, the HTTP requests moto received (its werkzeug request log), per file.
#
# A third contender, BENCH_VARIANT, a second ftpgate with one difference:
#   pasv-range (default): `[passive] ports = "20000-20999"` (vsftpd here also has a
#             201-port range). Without a range every PASV/EPSV binds port 0, and with
#             tens of thousands of TIME_WAIT sockets from the data connections the
#             kernel's search for a free ephemeral port costs milliseconds per bind.
#   nodelay:  bench/nodelay-shim.c preloaded (TCP_NODELAY on every accepted socket), to
#             isolate the ~40 ms Nagle/delayed-ACK stall of every final reply that
#             bench/latency-probe.sh showed before ee72d75 (a diagnosis aid only).
#   close-wait-0: `[server] upload_close_wait_us = 0` (no wait for a killed client's
#             control-connection close after each upload's data; default 1 ms).
#   none:     no third contender.
#
# In s3 mode both trees of a run are deleted after it (moto's LIST cost grows with the
# number of keys in the bucket, so runs would otherwise get slower one after another).
#
# Environment (optional): BENCH_RUNS (3), BENCH_FILES (2000), BENCH_DIRS (20),
# BENCH_TRANSFERS (8), BENCH_CHECKERS (8), FTPGATE_BIN (skip the build), BENCH_OUT
# (results file, default bench/small-files-MODE-latest.md), MOTO_SERVER,
# BENCH_GATE_ENV (extra environment for ftpgate: e.g. "LD_PRELOAD=/path/nodelay-shim.so",
# bench/nodelay-shim.c, which sets TCP_NODELAY on ftpgate's control connections).
MODE=${1:-local}
case "$MODE" in local | s3) ;; *) echo "usage: $0 local|s3" >&2; exit 2 ;; esac
SCRATCH=/dev/shm/ftpgate-small-$MODE
NAME=small-$MODE
. "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
FILES=${BENCH_FILES:-2000}
DIRS=${BENCH_DIRS:-20}
TRANSFERS=${BENCH_TRANSFERS:-8}
CHECKERS=${BENCH_CHECKERS:-8}
OUT=${BENCH_OUT:-$REPO/bench/small-files-$MODE-latest.md}
command -v rclone >/dev/null || die "rclone is required"
[ "$(id -u)" = 0 ] || die "must run as root (vsftpd)"
build_bin
GATE_ENV=${BENCH_GATE_ENV:-}
T_START=$(date -u '+%Y-%m-%d %H:%M')

# ------------------------------------------------------------------ tree --
SRC=$SCRATCH/src
python3 - "$SRC" "$FILES" "$DIRS" <<'EOF'
import os, random, sys
root, files, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
for i in range(files):
    d = os.path.join(root, f"dir{i % dirs:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(rnd.randint(1024, 65536)))
EOF
tree_sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
tree_sums "$SRC" >"$SCRATCH/src.sums"
[ "$(wc -l <"$SCRATCH/src.sums")" = "$FILES" ] || die "tree generation failed"
TREE_BYTES=$(du -sb --apparent-size "$SRC" | cut -f1)
log "tree: $FILES files in $DIRS directories, $TREE_BYTES bytes"
check_tree() { # dir what
    tree_sums "$1" >"$SCRATCH/got.sums"
    cmp -s "$SCRATCH/src.sums" "$SCRATCH/got.sums" || {
        diff "$SCRATCH/src.sums" "$SCRATCH/got.sums" | head >&2
        die "$2: tree differs from the source"
    }
}

# --------------------------------------------------------------- servers --
: >"$SCRATCH/rclone.conf"
RCLONE=(rclone --config "$SCRATCH/rclone.conf" copy --transfers "$TRANSFERS" --checkers "$CHECKERS" --stats 0)
HTTP_PORT=$(pick_port 24100)
GATE_PORT=$(pick_port 24121)
VARIANT=${BENCH_VARIANT:-pasv-range}
WITH_VARIANT=1
VENV=$GATE_ENV
VEXTRA=
case "$VARIANT" in
    none) WITH_VARIANT=0 ;;
    nodelay)
        gcc -shared -fPIC -O2 -o "$SCRATCH/nodelay-shim.so" "$REPO/bench/nodelay-shim.c" -ldl
        VENV="$GATE_ENV LD_PRELOAD=$SCRATCH/nodelay-shim.so" ;;
    pasv-range) VEXTRA='[passive]
ports = "20000-20999"' ;;
    close-wait-0) VEXTRA='upload_close_wait_us = 0' ;;
    *) die "BENCH_VARIANT: none | nodelay | pasv-range | close-wait-0" ;;
esac
if [ "$WITH_VARIANT" = 1 ]; then
    HTTP_PORT2=$(pick_port 24110)
    GATE_PORT2=$(pick_port 24131)
fi
OBSCURED=$(rclone obscure "$GATE_PASS")
declare -A REMOTE=() STORED=() SRV_PIDS=() MPORT=() GATE_OF=()
MPORT[ftpgate]=$HTTP_PORT
GATE_OF[ftpgate]=gate
if [ "$WITH_VARIANT" = 1 ]; then
    MPORT[variant]=$HTTP_PORT2
    GATE_OF[variant]=gate2
fi
if [ "$MODE" = local ]; then
    mkdir -p "$SCRATCH/gate-root" "$SCRATCH/gate2-root"
    start_gate gate "$GATE_PORT" "$HTTP_PORT" "kind = \"local\"
root = \"$SCRATCH/gate-root\""
    [ "$WITH_VARIANT" = 1 ] && GATE_ENV="$VENV" start_gate gate2 "$GATE_PORT2" "$HTTP_PORT2" "kind = \"local\"
root = \"$SCRATCH/gate2-root\"" "$VEXTRA"
    VS_PORT=$(pick_port 24141)
    start_vsftpd "$SCRATCH/vs-root" "$VS_PORT"
    CONTENDERS=(ftpgate vsftpd)
    REMOTE[ftpgate]=":ftp,host=127.0.0.1,port=$GATE_PORT,user=$GATE_USER,pass=$OBSCURED:"
    REMOTE[vsftpd]=":ftp,host=127.0.0.1,port=$VS_PORT,user=anonymous,pass=$(rclone obscure x):upload/"
    STORED[ftpgate]=$SCRATCH/gate-root/
    STORED[vsftpd]=$SCRATCH/vs-root/upload/
    SRV_PIDS[ftpgate]=${GATE_PID[gate]}
    SRV_PIDS[vsftpd]="$VS_PID $VS_WRAP"
    if [ "$WITH_VARIANT" = 1 ]; then
        CONTENDERS=(ftpgate variant vsftpd)
        REMOTE[variant]=":ftp,host=127.0.0.1,port=$GATE_PORT2,user=$GATE_USER,pass=$OBSCURED:"
        STORED[variant]=$SCRATCH/gate2-root/
        SRV_PIDS[variant]=${GATE_PID[gate2]}
    fi
    declare -A LABEL=([ftpgate]="ftpgate (local, tmpfs)" [variant]="ftpgate (local, tmpfs), variant $VARIANT" [vsftpd]="vsftpd $(/usr/sbin/vsftpd -v 0>&1 2>&1 | sed -n 's/.*version //p' | head -1) (tmpfs)")
else
    MOTO_PORT=$(pick_port 24150)
    start_moto "$MOTO_PORT"
    BUCKET=bench
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$ENDPOINT/$BUCKET")" = 200 ] || die "cannot create the bucket"
    # s3_storage PREFIX: the [storage] keys of a gate on moto's bucket under PREFIX.
    s3_storage() {
        printf '%s\n' 'kind = "s3"' "bucket = \"$BUCKET\"" "prefix = \"$1\"" 'region = "us-east-1"' \
            "endpoint = \"$ENDPOINT\"" 'force_path_style = true' 'allow_http = true' \
            'access_key_id = "testing"' 'secret_access_key = "testing"'
    }
    start_gate gate "$GATE_PORT" "$HTTP_PORT" "$(s3_storage gate)"
    [ "$WITH_VARIANT" = 1 ] && GATE_ENV="$VENV" start_gate gate2 "$GATE_PORT2" "$HTTP_PORT2" "$(s3_storage gate2)" "$VEXTRA"
    CONTENDERS=(ftpgate direct)
    REMOTE[ftpgate]=":ftp,host=127.0.0.1,port=$GATE_PORT,user=$GATE_USER,pass=$OBSCURED:"
    REMOTE[direct]=":s3,provider=Other,env_auth=false,access_key_id=testing,secret_access_key=testing,region=us-east-1,endpoint='$ENDPOINT',force_path_style=true:$BUCKET/direct/"
    SRV_PIDS[ftpgate]=$MOTO_PID
    SRV_PIDS[direct]=$MOTO_PID
    if [ "$WITH_VARIANT" = 1 ]; then
        CONTENDERS=(ftpgate variant direct)
        REMOTE[variant]=":ftp,host=127.0.0.1,port=$GATE_PORT2,user=$GATE_USER,pass=$OBSCURED:"
        SRV_PIDS[variant]=$MOTO_PID
    fi
    declare -A LABEL=([ftpgate]="rclone → ftpgate (FTP, kind = s3) → moto" [variant]="same, ftpgate variant $VARIANT" [direct]="rclone S3 backend → moto")
fi
log "contenders: ${CONTENDERS[*]}"

metrics() { curl -s "http://127.0.0.1:${MPORT[$1]}/metrics"; }
# Counters of one metrics snapshot: "name{labels} value" for the two families we diff.
counters() {
    grep -E '^(ftpgate_commands_total|ftpgate_backend_operation_duration_seconds_count)\{' | sort
}
# Difference of two snapshots -> "key delta" for non-zero deltas.
diff_counters() { # before after
    awk 'NR == FNR { b[$1] = $2; next } { d = $2 - b[$1]; if (d > 0) print $1, d }' "$1" "$2"
}

RAW=$SCRATCH/raw.tsv
printf 'contender\tdir\trun\tsecs\tserver_cpu_s\tmachine_busy_s\trclone_errors\tno_setmodtime\tgate_cpu_s\n' >"$RAW"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PSI_BEFORE=$(awk -F'avg60=' '/some/ { split($2, a, " "); print a[1] "%" }' /proc/pressure/cpu 2>/dev/null || echo n/a)

# One rclone copy, timed and recorded: xfer CONTENDER up|down RUN
xfer() {
    local c=$1 dir=$2 run=$3 from to t0 t1 c0 c1 g0 g1 m0 m1 err mline rc
    if [ "$dir" = up ]; then
        from=$SRC; to="${REMOTE[$c]}run-$run"
    else
        from="${REMOTE[$c]}run-$run"; to=$SCRATCH/down/$c-$run
    fi
    local gate=${GATE_OF[$c]:-}
    [ -n "$gate" ] && metrics "$c" | counters >"$SCRATCH/m0"
    [ "$MODE" = s3 ] && mline=$(($(moto_lines) + 1))
    sync
    c0=$(cpu_ticks ${SRV_PIDS[$c]}); g0=$([ -n "$gate" ] && cpu_ticks "${GATE_PID[$gate]}" || echo 0); m0=$(machine_busy); t0=$(date +%s.%N)
    rc=0
    env -u AWS_CA_BUNDLE "${RCLONE[@]}" "$from" "$to" 2>"$SCRATCH/logs/rclone-$c-$dir-$run.log" || rc=$?
    t1=$(date +%s.%N); c1=$(cpu_ticks ${SRV_PIDS[$c]}); g1=$([ -n "$gate" ] && cpu_ticks "${GATE_PID[$gate]}" || echo 0); m1=$(machine_busy)
    [ "$rc" = 0 ] || { cat "$SCRATCH/logs/rclone-$c-$dir-$run.log" >&2; die "rclone $c $dir run $run failed ($rc)"; }
    # rclone logs "SetModTime is not supported" (at ERROR level, exit status 0) once per
    # file on servers without MFMT (vsftpd): counted apart from real errors.
    err=$(grep 'ERROR' "$SCRATCH/logs/rclone-$c-$dir-$run.log" | grep -vc 'SetModTime is not supported' || true)
    nomod=$(grep -c 'SetModTime is not supported' "$SCRATCH/logs/rclone-$c-$dir-$run.log" || true)
    printf '%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%s\n' "$c" "$dir" "$run" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        "$(ticks_to_s "$c0" "$c1")" "$(ticks_to_s "$m0" "$m1")" "$err" "$nomod" \
        "$([ -n "$gate" ] && ticks_to_s "$g0" "$g1" || echo -)" >>"$RAW"
    log "$(tail -1 "$RAW" | tr '\t' ' ')"
    if [ -n "$gate" ]; then
        metrics "$c" | counters >"$SCRATCH/m1"
        diff_counters "$SCRATCH/m0" "$SCRATCH/m1" | sed "s/^/$dir $run /" >>"$SCRATCH/counts-$c.txt"
    fi
    if [ "$MODE" = s3 ]; then
        sleep 0.5 # werkzeug writes its line after the response
        moto_requests "$BUCKET" "$mline" | awk -v d="$dir" -v r="$run" '{
            m = $1; t = $2; op = m
            if (m == "GET" && (t ~ /[?&]list-type=/ || t ~ /^\/[^\/]+\/?(\?|$)/)) op = "LIST"
            else if (m == "PUT" && t ~ /[?&]partNumber=/) op = "UploadPart"
            else if (m == "POST" && t ~ /[?&]uploads/) op = "CreateMultipart"
            else if (m == "POST" && t ~ /[?&]uploadId=/) op = "CompleteMultipart"
            print d, r, op }' >>"$SCRATCH/s3req-$c.txt"
    fi
}
verify_up() { # contender run
    if [ -n "${STORED[$1]:-}" ]; then
        check_tree "${STORED[$1]}run-$2" "$1 run $2 (stored tree)"
        log "$1 run $2: stored tree verified (sha256 of $FILES files)"
    fi
}
verify_down() { # contender run
    check_tree "$SCRATCH/down/$1-$2" "$1 run $2 (downloaded tree)"
    log "$1 run $2: downloaded tree verified (sha256 of $FILES files)"
    rm -rf "$SCRATCH/down/$1-$2"
}

# Warm-up (connect, login, rclone start-up): one tiny copy each, not counted.
mkdir -p "$SCRATCH/warm" && echo warm >"$SCRATCH/warm/w.txt"
for c in "${CONTENDERS[@]}"; do
    env -u AWS_CA_BUNDLE rclone --config "$SCRATCH/rclone.conf" copy "$SCRATCH/warm" "${REMOTE[$c]}warm" 2>/dev/null || die "warm-up copy to $c failed"
done

for run in $(seq 1 "$RUNS"); do
    # rotate the order per run
    k=$(((run - 1) % ${#CONTENDERS[@]}))
    order=("${CONTENDERS[@]:k}" "${CONTENDERS[@]:0:k}")
    for c in "${order[@]}"; do xfer "$c" up "$run"; verify_up "$c" "$run"; done
    for c in "${order[@]}"; do xfer "$c" down "$run"; verify_down "$c" "$run"; done
    if [ "$MODE" = s3 ]; then
        for p in "gate/run-$run" "gate2/run-$run" "direct/run-$run"; do
            env -u AWS_CA_BUNDLE rclone --config "$SCRATCH/rclone.conf" purge \
                ":s3,provider=Other,env_auth=false,access_key_id=testing,secret_access_key=testing,region=us-east-1,endpoint='$ENDPOINT',force_path_style=true:$BUCKET/$p" 2>>"$SCRATCH/logs/purge.log"
        done
        log "run $run: both trees deleted from the bucket"
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
PSI_AFTER=$(awk -F'avg60=' '/some/ { split($2, a, " "); print a[1] "%" }' /proc/pressure/cpu 2>/dev/null || echo n/a)

# ---------------------------------------------------------------- report --
med() { awk -F'\t' -v c="$1" -v d="$2" -v k="$3" '$1 == c && $2 == d { print $k }' "$RAW" | median; }
runs_of() { awk -F'\t' -v c="$1" -v d="$2" '$1 == c && $2 == d { printf "%s%.2f", s, $4; s = " / " }' "$RAW"; }
B=${CONTENDERS[-1]}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; } # speed ratio A/B = time B / time A
rate() { awk -v t="$1" -v n="$FILES" 'BEGIN { printf "%.0f", n / t }'; }
per_file_counts() { # file dir -> "op n/file, ..." (medians over runs of the per-run totals)
    [ -f "$1" ] || { echo "–"; return; }
    awk -v d="$2" -v n="$FILES" -v runs="$RUNS" '$1 == d { k = $3; tot[k] += $NF } END {
        for (k in tot) if (tot[k] / runs / n >= 0.005) printf "%s %.2f\n", k, tot[k] / runs / n }' "$1" | sort -k2 -gr |
        awk '{ printf "%s%s %s", s, $1, $2; s = ", " }'
}
tidy() { sed -E 's/ftpgate_commands_total\{verb="([A-Z]+)",reply="([0-9]xx)"\}/\1 \2/g; s/ftpgate_backend_operation_duration_seconds_count\{backend="[^"]*",op="([a-z_]+)"\}/backend \1/g'; }
per_file_ops() { # file dir -> S3 requests per file by op, and the total
    [ -f "$1" ] || { echo "–"; return; }
    awk -v d="$2" -v n="$FILES" -v runs="$RUNS" '$1 == d { c[$3]++; t++ } END {
        for (k in c) printf "%s %.2f\n", k, c[k] / runs / n; printf "total %.2f\n", t / runs / n }' "$1" | sort -k2 -gr |
        awk '{ printf "%s%s %s", s, $1, $2; s = ", " }'
}
{
    echo "## Small files ($MODE) $T_START UTC"
    echo
    machine_note
    echo "- Tree: $FILES files, 1–64 KiB random sizes (total $(awk -v b="$TREE_BYTES" 'BEGIN { printf "%.1f MiB", b / 1048576 }')), $DIRS directories; \`rclone copy --transfers $TRANSFERS --checkers $CHECKERS\`, $RUNS runs interleaved (order alternating), median"
    echo "- Load average $LOAD_BEFORE before, $LOAD_AFTER after; CPU pressure (PSI some avg60) $PSI_BEFORE before, $PSI_AFTER after"
    echo
    if [ "$MODE" = s3 ]; then CPUH="ftpgate CPU s up / down | moto CPU s up / down"; else CPUH="ftpgate CPU s up / down | vsftpd CPU s up / down"; fi
    echo "| contender | up s (median) | files/s | down s (median) | files/s | $CPUH | machine busy s up / down | rclone errors | \"SetModTime is not supported\" |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${CONTENDERS[@]}"; do
        u=$(med "$c" up 4); d=$(med "$c" down 4)
        gc="–"; sc="$(med "$c" up 5) / $(med "$c" down 5)"
        if [ -n "${GATE_OF[$c]:-}" ]; then
            gc="$(med "$c" up 9) / $(med "$c" down 9)"
            [ "$MODE" = local ] && sc="–"
        fi
        printf '| %s | %.2f | %s | %.2f | %s | %s | %s | %s / %s | %s | %s |\n' "${LABEL[$c]}" "$u" "$(rate "$u")" "$d" "$(rate "$d")" \
            "$gc" "$sc" "$(med "$c" up 6)" "$(med "$c" down 6)" \
            "$(awk -F'\t' -v c="$c" '$1 == c { s += $7 } END { print s + 0 }' "$RAW")" \
            "$(awk -F'\t' -v c="$c" '$1 == c { s += $8 } END { print s + 0 }' "$RAW")"
    done
    echo
    for A in "${CONTENDERS[@]}"; do
        [ "$A" = "$B" ] && continue
        echo "- **${LABEL[$A]} / $B speed ratio: up $(ratio "$(med "$A" up 4)" "$(med "$B" up 4)")×, down $(ratio "$(med "$A" down 4)" "$(med "$B" down 4)")×** (time of $B ÷ time of this)"
    done
    echo
    echo "Per run (s): $(for c in "${CONTENDERS[@]}"; do printf '%s up %s, down %s; ' "$c" "$(runs_of "$c" up)" "$(runs_of "$c" down)"; done)"
    [ -n "$GATE_ENV" ] && echo "ftpgate ran with the extra environment: $GATE_ENV."
    echo
    echo "FTP commands and backend calls per file, mean over the runs (ftpgate /metrics):"
    echo
    for c in "${CONTENDERS[@]}"; do
        [ -n "${GATE_OF[$c]:-}" ] || continue
        echo "- ${LABEL[$c]}, up: $(per_file_counts "$SCRATCH/counts-$c.txt" up | tidy)"
        echo "- ${LABEL[$c]}, down: $(per_file_counts "$SCRATCH/counts-$c.txt" down | tidy)"
    done
    if [ "$MODE" = s3 ]; then
        echo
        echo "S3 requests per file seen by moto (its request log), mean over the runs:"
        echo
        for c in "${CONTENDERS[@]}"; do
            echo "- ${LABEL[$c]}: up: $(per_file_ops "$SCRATCH/s3req-$c.txt" up); down: $(per_file_ops "$SCRATCH/s3req-$c.txt" down)"
        done
    fi
    echo
    echo "All stored and downloaded trees matched the source (sha256 of every file)."
    echo
    raw_details "$RAW"
} >"$OUT.tmp"
publish
