#!/usr/bin/env bash
# Regenerate the published results of the default grid (the `quick` preset):
# the raw results in quick/, the report in report/ and leaderboard.csv.
# Run from anywhere; give FineWeb (--data PATH or OPTBENCH_FINEWEB) and a
# tiktoken cache (TIKTOKEN_CACHE_DIR) to include the model-5 runs.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf quick
optbench grid --out quick --quiet "$@" || [ $? -eq 3 ]   # 3: some runs failed; still publish
# the per-step cost of every optimizer (pytest-benchmark, ~1 minute); the report reads it from there
optbench speed -o quick/speed_steps.csv > /dev/null || [ $? -eq 3 ]
rm -rf report leaderboard.csv
optbench report quick -o report
optbench leaderboard quick -o leaderboard.csv
