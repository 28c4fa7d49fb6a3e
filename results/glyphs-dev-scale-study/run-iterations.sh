#!/usr/bin/env bash
# Meta-iterations axis of the scale study: dev instance, SS 5-way 1-shot, the quick profile
# grown to 1000 meta-iterations with meta-val (300 episodes) every 100; seeds 0-2.
# Usage: bash run-iterations.sh RESULTS_DIR [SLOTS]   (runs SLOTS jobs at once, 1 torch thread each)
set -euo pipefail
RESULTS="${1:?usage: bash run-iterations.sh RESULTS_DIR [SLOTS]}"
SLOTS="${2:-2}"
COMMON=(--scenario SS --shots 1 --instance dev --results "$RESULTS" --no-progress
        --set train.meta_iterations=1000 --set train.val_every=100 --set train.val_episodes=300)
dfml-bench pool build --scenario SS --instance dev --no-progress
# Pairs first (each seed of the method beside the same seed of its floor), then the floor without
# training, the real-image probe and the ceiling. A finished run is skipped on a re-run.
jobs=()
for s in 0 1 2; do jobs+=("bidf_mkd $s" "bidf_mkd_noise $s"); done
jobs+=("random 0,1,2")
for s in 0 1 2; do jobs+=("bidf_mkd_real $s"); done
for s in 0 1 2; do jobs+=("maml_oracle $s"); done
# xargs appends each job's "METHOD SEEDS" after the common options.
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P "$SLOTS" -L 1 bash -c \
    'dfml-bench run "${@:1:$#-2}" --method "${@: -2:1}" --seeds "${@: -1}"' run "${COMMON[@]}"
