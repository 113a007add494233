#!/usr/bin/env bash
# Instructions per REGISTER and per call under callgrind: repeatable on a loaded
# machine, unlike wall-clock or CPU time. Starts the release binary under valgrind
# (SQLite store, log warn, a webhook provider as in bench/run.py), registers N new AORs
# with SIPp (sipp-scenarios/register_push.xml) at a low rate, then refreshes the same N
# AORs from the same Contact, then places CALLS calls (uac.xml -> sipwake -> uas.xml),
# zeroing and dumping the counters around each phase.
#
#   [CALLS=N/2] bench/callgrind.sh [N=3000] [RATE=100] [KEY=VALUE sipwake settings...]
#   e.g. bench/callgrind.sh 3000 100 STORE__REFRESH_WRITE_BEHIND_MS=0
#
# Prints Ir per REGISTER for each phase (and SIPp's retransmissions, which must be 0 for
# the figure to compare: valgrind runs sipwake ~50x slower, and on a loaded machine
# answers can pass SIPp's 500 ms timer) and leaves callgrind.out.* in the work
# directory for callgrind_annotate (printed at the end). Needs valgrind and sipp.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-3000}
RATE=${2:-100}
CALLS=${CALLS:-$((N / 2))}
shift $(( $# > 2 ? 2 : $# ))
for tool in valgrind callgrind_control sipp; do
    command -v "$tool" >/dev/null || { echo "bench/callgrind.sh: $tool not installed" >&2; exit 1; }
done
BIN=${SIPWAKE_BIN:-target/release/sipwake}
[ -x "$BIN" ] || { echo "bench/callgrind.sh: build $BIN first (cargo build --release)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/sipwake-callgrind-XXXXXX)
port() { python3 -c 'import sys; sys.path.insert(0, "bench"); import benchlib; print(benchlib.free_port())'; }
PORT=$(port)
SPORT=$(port)
# no admin listener: the default port 8060 may be another sipwake's (as in bench/run.py)
env_args=(SIPWAKE__SIP__LISTEN=127.0.0.1:$PORT SIPWAKE__SIP__TRANSPORTS=udp
    SIPWAKE__STORE__BACKEND=sqlite SIPWAKE__STORE__PATH=$WORK/sipwake.db
    SIPWAKE__LOG__LEVEL=warn SIPWAKE__ADMIN__LISTEN= SIPWAKE__PUSH__WEBHOOK__URL=http://127.0.0.1:9/push
    SIPWAKE__PUSH__DEFAULT_PROVIDER=webhook)
for kv in "$@"; do env_args+=("SIPWAKE__${kv#SIPWAKE__}"); done
env "${env_args[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    --dump-instr=no --collect-atstart=yes "$BIN" >"$WORK/sipwake.log" 2>&1 &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
python3 -c "import sys; sys.path.insert(0, 'bench'); import benchlib; benchlib.wait_sip_udp($PORT, timeout=120)"
# phase NAME SCENARIO COUNT SIPP-ARGS...: zero the counters, run SIPp, dump, print Ir per
# successful scenario run
phase() {
    local name=$1 scen=$2 count=$3
    shift 3
    callgrind_control -z $VG >/dev/null
    local before
    before=$(ls "$WORK"/callgrind.out.* 2>/dev/null || true)
    (cd "$WORK" && sipp -sf "$ROOT/sipp-scenarios/$scen" -i 127.0.0.1 "$@" \
        -m "$count" -r "$RATE" -nostdin -trace_stat -stf "$name.csv" \
        -timeout $((count / RATE * 4 + 60))s 127.0.0.1:$PORT >"$name.sipp.log" 2>&1) || true
    sleep 2   # let the last commits and the write-behind window pass
    callgrind_control -d "$name" $VG >/dev/null
    local ok retrans
    read -r ok retrans < <(tail -1 "$WORK/$name.csv" | python3 -c 'import sys
row = sys.stdin.read().split(";")
hdr = open(sys.argv[1]).readline().split(";")
print(row[hdr.index("SuccessfulCall(C)")], row[hdr.index("Retransmissions(C)")])' "$WORK/$name.csv")
    # every dump written since the counters were zeroed belongs to this phase (callgrind
    # can write more than one, e.g. one per thread that ended): their totals add up
    local f ir=0 v files=""
    for f in "$WORK"/callgrind.out.*; do
        grep -qxF "$f" <<<"$before" && continue
        v=$(grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}')
        ir=$((ir + v))
        files="$files ${f##*/}"
    done
    f="$WORK:$files"
    echo "$name: $ok answered, $ir Ir, $((ir / (ok > 0 ? ok : 1))) Ir per $scen run, $retrans SIPp retransmissions ($f)"
    # a retransmission is a second message to parse and answer: the count per REGISTER
    # is only comparable between runs without them (lower RATE on a loaded machine)
    [ "$retrans" = 0 ] || echo "$name: WARNING: $retrans retransmissions inflate the count; rerun with a lower RATE" >&2
}
phase new register_push.xml "$N" -s cg -p "$SPORT"
phase refresh register_push.xml "$N" -s cg -p "$SPORT"
# calls: uac.xml -> sipwake -> uas.xml (INVITE/180/200/ACK, 100 ms, BYE/200), UDP on
# both legs as in bench/run.py; the UAS registers first (outside the counted phase)
UPORT=$(port)
(cd "$WORK" && sipp -sf "$ROOT/sipp-scenarios/register_uas.xml" -i 127.0.0.1 -p "$UPORT" \
    -s cguas -m 1 -nostdin -timeout 60s 127.0.0.1:$PORT >uasreg.log 2>&1)
(cd "$WORK" && sipp -sf "$ROOT/sipp-scenarios/uas.xml" -i 127.0.0.1 -p "$UPORT" \
    -m "$CALLS" -nostdin -timeout $((CALLS / RATE * 4 + 90))s >uas.log 2>&1) &
UAS=$!
sleep 1
phase call uac.xml "$CALLS" -s cguas -p "$(port)" -recv_timeout 20000
wait $UAS || true
echo "annotate: callgrind_annotate --inclusive=yes <file> | head -60   (work dir $WORK)"
