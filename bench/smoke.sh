#!/usr/bin/env bash
# CI smoke run of the benchmark suite (~30 s after the release build): small rates,
# 3 s per step, sipwake and (when installed) Kamailio, plus a short push-wake run.
# Fails if a step produced no result, a push-wake call failed, or the whole run
# overran its time bound. Writes nothing into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v sipp >/dev/null; then
    echo "bench/smoke.sh: sipp not installed" >&2
    exit 1
fi
exec timeout --kill-after=10 600 python3 bench/run.py --smoke "$@"
