#!/usr/bin/env bash
# Listing a huge directory on S3 (issue 7): BENCH_OBJECTS objects (default 100,000) under
# one prefix on a moto server, listed through ftpgate (kind = "s3") with MLSD and NLST
# (ftplib) and directly with boto3's list_objects_v2 paginator (Prefix, Delimiter='/'),
# BENCH_RUNS rounds with the contenders interleaved (order rotating), medians.
#
#   bash bench/list-bench.sh        # writes bench/list-results-latest.md
#
# Fill: raw unsigned HTTP PUTs with keep-alive from BENCH_FILL_THREADS threads (moto does
# not check signatures); the fill rate is reported. Each listing is checked: exactly the
# BENCH_OBJECTS names, no duplicates.
#
# Measured per listing: time to the first entry (first data bytes for FTP, first page
# with entries for boto3) and total time (FTP: from sending the command, PASV included,
# to the 226; boto3: the paginator loop in a connected client); ftpgate's VmRSS before
# the command and VmHWM after it (the high-water mark is reset through
# /proc/PID/clear_refs after the login, so argon2's 19 MiB do not count); CPU of the
# client, of moto and of ftpgate; moto's requests during the ftpgate listings (its log).
#
# Environment (optional): BENCH_OBJECTS (100000), BENCH_RUNS (3), BENCH_CMDS (MLSD,NLST),
# BENCH_FILL_THREADS (8), FTPGATE_BIN, BENCH_OUT, MOTO_SERVER.
SCRATCH=/dev/shm/ftpgate-list-bench
NAME=list
. "$(dirname "$0")/lib.sh"

COUNT=${BENCH_OBJECTS:-100000}
RUNS=${BENCH_RUNS:-3}
CMDS=${BENCH_CMDS:-MLSD,NLST}
THREADS=${BENCH_FILL_THREADS:-8}
OUT=${BENCH_OUT:-$REPO/bench/list-results-latest.md}
PY=$REPO/bench/list_bench.py
build_bin
T_START=$(date -u '+%Y-%m-%d %H:%M')

MOTO_PORT=$(pick_port 25150)
start_moto "$MOTO_PORT"
BUCKET=bench
PREFIX=huge
[ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$ENDPOINT/$BUCKET")" = 200 ] || die "cannot create the bucket"

log "filling $COUNT objects with $THREADS threads"
m0=$(cpu_ticks "$MOTO_PID")
FILL=$(python3 "$PY" fill "$ENDPOINT" "$BUCKET" "$PREFIX" "$COUNT" "$THREADS")
m1=$(cpu_ticks "$MOTO_PID")
read -r FILL_N FILL_S FILL_RATE <<<"$FILL"
FILL_MOTO_CPU=$(ticks_to_s "$m0" "$m1")
log "fill: $FILL_N objects in $FILL_S s ($FILL_RATE PUT/s), moto CPU $FILL_MOTO_CPU s"

HTTP_PORT=$(pick_port 25100)
GATE_PORT=$(pick_port 25121)
start_gate gate "$GATE_PORT" "$HTTP_PORT" "kind = \"s3\"
bucket = \"$BUCKET\"
region = \"us-east-1\"
endpoint = \"$ENDPOINT\"
force_path_style = true
allow_http = true
access_key_id = \"testing\"
secret_access_key = \"testing\""
GPID=${GATE_PID[gate]}
IDLE_RSS=$(kib "$GPID" VmRSS)

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RAW=$SCRATCH/raw.tsv
printf 'contender\trun\tfirst_s\ttotal_s\tentries\tclient_cpu_s\tmoto_cpu_s\tgate_cpu_s\trss_before_kib\thwm_kib\tpages\tpage1_s\tlastpage_s\n' >"$RAW"
MLINE=$(($(moto_lines) + 1))
env -u AWS_CA_BUNDLE python3 "$PY" run "$ENDPOINT" "$BUCKET" "$PREFIX" "$COUNT" "$RUNS" "$CMDS" \
    "$GATE_PORT" "$GATE_USER" "$GATE_PASS" "$GPID" "$MOTO_PID" "$RAW" || die "listing run failed"
sleep 0.5
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# moto requests during the runs, by kind (the direct listings are the same LIST pages).
REQS=$(moto_requests "$BUCKET" "$MLINE" | awk '{ m = $1; op = (m == "GET" && $2 ~ /list-type=|^\/[^\/]+\/?(\?|$)/) ? "LIST" : m; c[op]++ } END { for (k in c) printf "%s %d, ", k, c[k] }')
NCMDS=$(tr ',' '\n' <<<"$CMDS" | wc -l)
PAGES=$(awk -F'\t' '$1 == "direct" { print $11; exit }' "$RAW")
GATE_HWM_TOTAL=$(kib "$GPID" VmHWM)

# ---------------------------------------------------------------- report --
med() { awk -F'\t' -v c="$1" -v k="$2" 'NR > 1 && $1 == c { print $k }' "$RAW" | median; }
runs_of() { awk -F'\t' -v c="$1" -v k="$2" 'NR > 1 && $1 == c { printf "%s%s", s, $k; s = " / " }' "$RAW"; }
D_TOTAL=$(med direct 4)
{
    echo "## Listing $COUNT objects under one prefix (moto) $T_START UTC"
    echo
    machine_note
    echo "- S3: moto $(python3 -c 'from importlib.metadata import version as v; print(v("moto"))') (one Python process, objects in memory), boto3 $(python3 -c 'import boto3; print(boto3.__version__)'); $RUNS rounds, contenders interleaved (order rotating), median"
    echo "- Load average $LOAD_BEFORE before the listings, $LOAD_AFTER after"
    echo "- Fill: $FILL_N objects (1–100 bytes) in $FILL_S s = **$FILL_RATE PUT/s** ($THREADS threads, raw unsigned keep-alive PUTs; moto CPU $FILL_MOTO_CPU s)"
    echo
    echo "| contender | first entry s | total s | total ÷ direct | client CPU s | moto CPU s | ftpgate CPU s | ftpgate VmRSS before | VmHWM during | growth |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in direct $(tr ',' ' ' <<<"$CMDS"); do
        t=$(med "$c" 4)
        if [ "$c" = direct ]; then
            label="boto3 list_objects_v2 paginator (Delimiter='/')"
            mem="| – | – | –"
        else
            label="$c through ftpgate (ftplib)"
            mem=$(awk -v a="$(med "$c" 9)" -v b="$(med "$c" 10)" 'BEGIN { printf "| %.1f MiB | %.1f MiB | **%.1f MiB**", a / 1024, b / 1024, (b - a) / 1024 }')
        fi
        printf '| %s | %.3f | %.2f | %s | %s | %s | %s %s |\n' "$label" "$(med "$c" 3)" "$t" \
            "$(awk -v a="$t" -v b="$D_TOTAL" 'BEGIN { printf "%.2f×", a / b }')" "$(med "$c" 6)" "$(med "$c" 7)" \
            "$( [ "$c" = direct ] && echo – || med "$c" 8)" "$mem"
    done
    echo
    echo "Per round (total s): $(for c in direct $(tr ',' ' ' <<<"$CMDS"); do printf '%s %s; ' "$c" "$(runs_of "$c" 4)"; done)"
    echo "First entry (s): $(for c in direct $(tr ',' ' ' <<<"$CMDS"); do printf '%s %s; ' "$c" "$(runs_of "$c" 3)"; done)"
    echo
    echo "Direct listing: $PAGES pages; time of the first page $(runs_of direct 12) s, of the last page $(runs_of direct 13) s (per round)."
    echo "ftpgate idle VmRSS $(awk -v a="$IDLE_RSS" 'BEGIN { printf "%.1f", a / 1024 }') MiB at start; VmHWM at the end $(awk -v a="$GATE_HWM_TOTAL" 'BEGIN { printf "%.1f", a / 1024 }') MiB (the mark is reset after each login, so argon2's 19 MiB are not in it). Medians are per column."
    echo "moto requests during the listing rounds (direct and ftpgate; $RUNS × (1 + $NCMDS) listings): ${REQS%, }."
    echo "Every listing returned exactly $COUNT names, no duplicates."
    echo
    raw_details "$RAW"
} >"$OUT.tmp"
publish
