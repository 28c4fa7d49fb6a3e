#!/usr/bin/env bash
# Meta-iterations axis of the scale study: dev instance, SS 5-way 1-shot, the quick profile
# grown to 1000 meta-iterations with meta-val (300 episodes) every 100; seeds 0-2.
# Usage: bash run-iterations.sh RESULTS_DIR [SLOTS]   (runs SLOTS jobs at once, 1 torch thread each;
# a finished run is skipped on a re-run, so the same command resumes the study)
set -euo pipefail
RESULTS="${1:?usage: bash run-iterations.sh RESULTS_DIR [SLOTS]}"
SLOTS="${2:-2}"
RUN="dfml-bench run --scenario SS --shots 1 --instance dev --results $RESULTS --no-progress \
--set train.meta_iterations=1000 --set train.val_every=100 --set train.val_episodes=300"
dfml-bench pool build --scenario SS --instance dev --no-progress
# Pairs first (each seed of the method beside the same seed of its floor), then the floor without
# training, and the real-image probe interleaved with the ceiling.
jobs=()
for s in 0 1 2; do jobs+=("$RUN --method bidf_mkd --seeds $s" "$RUN --method bidf_mkd_noise --seeds $s"); done
jobs+=("$RUN --method random --seeds 0,1,2")
for s in 0 1 2; do
    jobs+=("$RUN --method bidf_mkd_real --seeds $s" "$RUN --method maml_oracle --seeds $s")
done
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -d '\n' -P "$SLOTS" -I{} bash -c '{}'
