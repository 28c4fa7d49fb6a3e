#!/usr/bin/env bash
# The suite's variant in the scale study, dev instance, SS 5-way 1-shot, meta-val every 100 on 300
# episodes, seeds 0-2: bidf_mkd_plus and its own noise floor at `--profile long` (axis 1's bidf_mkd
# and bidf_mkd_noise runs have the same settings), then its four ablations at the quick length
# (300 meta-iterations; the variant's long runs are scored at 300 beside them).
# Usage: bash run-variant.sh RESULTS_DIR [SLOTS]   (a re-run skips finished runs and resumes the rest)
set -euo pipefail
RESULTS="${1:?usage: bash run-variant.sh RESULTS_DIR [SLOTS]}"
SLOTS="${2:-2}"
BASE="dfml-bench run --scenario SS --shots 1 --instance dev --results $RESULTS --no-progress"
LONG="$BASE --profile long"
QUICK="$BASE --set train.val_every=100 --set train.val_episodes=300"
jobs=()
for s in 0 1 2; do jobs+=("$LONG --method bidf_mkd_plus --seeds $s"); done
for s in 0 1 2; do jobs+=("$LONG --method bidf_mkd_plus_noise --seeds $s"); done
for a in no_permute memory_replay no_filter all_support; do
    for s in 0 1 2; do jobs+=("$QUICK --method bidf_mkd_plus_$a --seeds $s"); done
done
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -d '\n' -P "$SLOTS" -I{} bash -c '{}'
