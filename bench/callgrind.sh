#!/usr/bin/env bash
# Instructions per REGISTER under callgrind: repeatable on a loaded machine, unlike
# wall-clock or CPU time. Starts the release binary under valgrind (SQLite store,
# log warn, a webhook provider as in bench/run.py), registers N new AORs with SIPp
# (sipp-scenarios/register_push.xml) at a low rate, then refreshes the same N AORs
# from the same Contact, zeroing and dumping the counters around each phase.
#
#   bench/callgrind.sh [N=3000] [RATE=100] [KEY=VALUE sipwake settings...]
#   e.g. bench/callgrind.sh 3000 100 STORE__REFRESH_WRITE_BEHIND_MS=0
#
# Prints Ir per REGISTER for each phase and leaves callgrind.out.* in the work
# directory for callgrind_annotate (printed at the end). Needs valgrind and sipp.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-3000}
RATE=${2:-100}
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
env_args=(SIPWAKE__SIP__LISTEN=127.0.0.1:$PORT SIPWAKE__SIP__TRANSPORTS=udp
    SIPWAKE__STORE__BACKEND=sqlite SIPWAKE__STORE__PATH=$WORK/sipwake.db
    SIPWAKE__LOG__LEVEL=warn SIPWAKE__PUSH__WEBHOOK__URL=http://127.0.0.1:9/push
    SIPWAKE__PUSH__DEFAULT_PROVIDER=webhook)
for kv in "$@"; do env_args+=("SIPWAKE__${kv#SIPWAKE__}"); done
env "${env_args[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    --dump-instr=no --collect-atstart=yes "$BIN" >"$WORK/sipwake.log" 2>&1 &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
python3 -c "import sys; sys.path.insert(0, 'bench'); import benchlib; benchlib.wait_sip_udp($PORT, timeout=120)"
phase() {
    local name=$1
    callgrind_control -z $VG >/dev/null
    (cd "$WORK" && sipp -sf "$ROOT/sipp-scenarios/register_push.xml" -s cg -i 127.0.0.1 \
        -p "$SPORT" -m "$N" -r "$RATE" -nostdin -trace_stat -stf "$name.csv" \
        -timeout $((N / RATE * 4 + 60))s 127.0.0.1:$PORT >"$name.sipp.log" 2>&1) || true
    sleep 2   # let the last commits and the write-behind window pass
    callgrind_control -d "$name" $VG >/dev/null
    local ok
    ok=$(tail -1 "$WORK/$name.csv" | python3 -c 'import sys
row = sys.stdin.read().split(";")
hdr = open(sys.argv[1]).readline().split(";")
print(row[hdr.index("SuccessfulCall(C)")])' "$WORK/$name.csv")
    local f
    f=$(ls -t "$WORK"/callgrind.out.*."$name"* 2>/dev/null | head -1 || true)
    [ -n "$f" ] || f=$(ls -t "$WORK"/callgrind.out.* | head -1)
    local ir
    ir=$(grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}')
    echo "$name: $ok REGISTERs answered 200, $ir Ir, $((ir / (ok > 0 ? ok : 1))) Ir per REGISTER ($f)"
}
phase new
phase refresh
echo "annotate: callgrind_annotate --inclusive=yes <file> | head -60   (work dir $WORK)"
