#!/bin/sh
# The standard runs of issue 4, unattended, on whatever machine this is (each result
# records it): RSA-2048 and ECDSA P-256 load tests against the raw ceiling, the
# 2,000-certificate memory run, `plan` against a simulated-latency load test, and the
# station-growth benchmark. Results (JSON, and PNG plots) go to bench/results/.
# Run it on a quiet machine: other load on the cores skews the pipeline and the ceiling
# differently (each report says how many cores the rest of the machine took).
#
#   bench/standard_runs.sh            # about 15 minutes on a 2-core machine
#   PROCESSES=4 bench/standard_runs.sh
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
P=${PROCESSES:-2}
OUT=bench/results
mkdir -p "$OUT"
started=$(date +%s)
run() { echo "== $*" >&2; "$PY" -m certfactory.cli "$@"; }

run loadtest --count 600 --key-type rsa2048 --processes "$P" --device-work \
    --json "$OUT/loadtest-rsa2048.json" --plot "$OUT/loadtest-rsa2048.png"
run loadtest --count 1000 --key-type ecdsa-p256 --processes "$P" --device-work \
    --json "$OUT/loadtest-ecdsa-p256.json" --plot "$OUT/loadtest-ecdsa-p256.png"
# the same with the device tokens on this host's disk instead of RAM (SoftHSM2's file store
# then slows the ceiling's devices as much as the pipeline's)
run loadtest --count 1000 --key-type ecdsa-p256 --processes "$P" --device-work --device-storage disk \
    --json "$OUT/loadtest-ecdsa-p256-disk.json"
# memory: peak RSS per worker process and its growth over 2,000 certificates
run loadtest --count 2000 --key-type ecdsa-p256 --processes "$P" --ceiling-count 400 \
    --json "$OUT/loadtest-memory-2000.json" --plot "$OUT/loadtest-memory-2000.png"
echo "== plan check" >&2
"$PY" bench/plan_check.py --processes "$P" --json "$OUT/plan_check.json"
echo "== the device's own work, step by step, in RAM and on disk" >&2
for kt in rsa2048 ecdsa-p256; do
    for where in ram disk; do
        "$PY" bench/device_floor.py --devices 60 --key-type "$kt" --device-storage "$where" \
            --json "$OUT/device_floor-$kt-$where.json" > /dev/null
    done
done
echo "== one queue hop with nothing in the stage, at RSA-2048's rate, with and without the poll floor" >&2
for floor in 0 100; do
    "$PY" bench/hop_cost.py --messages 600 --rate 9 --poll-floor-ms "$floor" --json "$OUT/hop_cost-floor$floor.json" > /dev/null
done
echo "== a burst through one worker thread: how fast a busy queue drains" >&2
"$PY" bench/hop_cost.py --messages 600 --rate 2000 --json "$OUT/hop_cost-burst.json" > /dev/null
echo "== station growth" >&2
"$PY" bench/station_growth.py --devices 2000 --json "$OUT/station_growth.json" > /dev/null
"$PY" bench/summary.py "$OUT" > "$OUT/SUMMARY.md"
echo "standard runs done in $(( $(date +%s) - started )) s; summary in $OUT/SUMMARY.md" >&2
