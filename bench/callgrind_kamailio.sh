#!/usr/bin/env bash
# Kamailio's instructions per REGISTER (new AOR) and per call under callgrind, the
# counterpart of bench/callgrind.sh, so the two proxies' user-space work can be
# compared in instructions (which do not move with the machine's load) and not only in
# CPU time. Kamailio runs bench/kamailio/kamailio.cfg (in-memory usrloc, tm,
# record_route) with one UDP worker, started once per phase under valgrind, and run to
# its exit: callgrind counts each of its processes to one file. Every phase is
# preceded by an idle run of the same length, whose total (start-up, timers) is
# subtracted, so what is left is the work of the requests.
#
#   bench/callgrind_kamailio.sh [N=1000] [RATE=20] [CALLS=N/2]
#
# Prints Ir per REGISTER and per call, and SIPp's retransmissions (0 for a figure
# that compares). Needs valgrind, kamailio and sipp.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-1000}
RATE=${2:-20}
CALLS=${3:-$((N / 2))}
for tool in valgrind kamailio sipp; do
    command -v "$tool" >/dev/null || { echo "bench/callgrind_kamailio.sh: $tool not installed" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/kamailio-callgrind-XXXXXX)
port() { python3 -c 'import sys; sys.path.insert(0, "bench"); import benchlib; print(benchlib.free_port())'; }
sipp_in() { (cd "$1" && shift && sipp -sf "$ROOT/sipp-scenarios/$1" -i 127.0.0.1 -nostdin "${@:2}"); }
KAM=
trap '[ -z "$KAM" ] || kill "$KAM" 2>/dev/null || true' EXIT

# run NAME SECONDS KIND: Kamailio under callgrind for one phase; KIND idle sleeps
# SECONDS, new registers N AORs, call places CALLS calls; prints "total ok retrans secs"
run() {
    local name=$1 secs=$2 kind=$3 dir=$WORK/$1 port
    mkdir -p "$dir/k"
    port=$(port)
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" --dump-instr=no \
        kamailio -f "$ROOT/bench/kamailio/kamailio.cfg" -DD -E -x fm -X fm -m 256 -M 32 \
        -n 1 -N 1 -l "udp:127.0.0.1:$port" -Y "$dir/k" -w "$dir/k" -P "$dir/k/pid" \
        >"$dir/kamailio.log" 2>&1 &
    KAM=$!
    python3 -c "import sys; sys.path.insert(0, 'bench'); import benchlib; benchlib.wait_sip_udp($port, timeout=120)"
    sleep 3
    local t0=$SECONDS
    case $kind in
    idle) sleep "$secs" ;;
    new) sipp_in "$dir" register_push.xml -p "$(port)" -s cg -m "$N" -r "$RATE" \
            -timeout $((N / RATE * 4 + 60))s -trace_stat -stf phase.csv "127.0.0.1:$port" >"$dir/sipp.log" 2>&1 || true ;;
    call)
        local uport
        uport=$(port)
        sipp_in "$dir" register_uas.xml -p "$uport" -s cguas -m 1 -timeout 60s "127.0.0.1:$port" >"$dir/uasreg.log" 2>&1
        sipp_in "$dir" uas.xml -p "$uport" -m "$CALLS" -timeout $((CALLS / RATE * 4 + 90))s >"$dir/uas.log" 2>&1 &
        local uas=$!
        sleep 1
        sipp_in "$dir" uac.xml -p "$(port)" -s cguas -m "$CALLS" -r "$RATE" -recv_timeout 20000 \
            -timeout $((CALLS / RATE * 4 + 60))s -trace_stat -stf phase.csv "127.0.0.1:$port" >"$dir/sipp.log" 2>&1 || true
        wait "$uas" || true ;;
    esac
    sleep 2
    local took=$((SECONDS - t0))
    kill -TERM "$KAM"
    wait "$KAM" 2>/dev/null || true
    KAM=
    local total=0 f v
    for f in "$dir"/callgrind.out.*; do
        v=$(grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}')
        total=$((total + v))
    done
    local ok=0 retrans=0
    if [ -f "$dir/phase.csv" ]; then
        read -r ok retrans < <(tail -1 "$dir/phase.csv" | python3 -c 'import sys
row = sys.stdin.read().split(";")
hdr = open(sys.argv[1]).readline().split(";")
print(row[hdr.index("SuccessfulCall(C)")], row[hdr.index("Retransmissions(C)")])' "$dir/phase.csv")
    fi
    echo "$total $ok $retrans $took"
}

for kind in new call; do
    read -r total ok retrans took < <(run "$kind" 0 "$kind")
    read -r idle _ _ _ < <(run "idle-$kind" "$took" idle)
    echo "$kind: $ok answered, $total Ir, idle run of ${took} s $idle Ir," \
        "$(((total - idle) / (ok > 0 ? ok : 1))) Ir per operation, $retrans SIPp retransmissions"
done
echo "work dir $WORK"
