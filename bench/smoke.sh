#!/usr/bin/env bash
# CI smoke run of the benchmark suite (~1.5 min after the release build): small
# rates, 3 s per step, sipwake with the SQLite store and with the Redis store (a
# redis-server of its own; no ramp for it here) and (when installed) Kamailio, plus
# short push-wake runs on one node and across three nodes on Redis (run.py fails
# when redis-server is missing).
# Fails if a step produced no result, a push-wake call failed, or the whole run
# overran its time bound. Writes nothing into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v sipp >/dev/null; then
    echo "bench/smoke.sh: sipp not installed" >&2
    exit 1
fi
exec timeout --kill-after=10 600 python3 bench/run.py --smoke "$@"
