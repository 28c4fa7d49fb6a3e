#!/usr/bin/env bash
# One more axis of the scale study: the quick profile (300 meta-iterations) with one setting grown,
# bidf_mkd beside its noise floor, seeds 0-2, meta-val (300 episodes) every 100, dev instance, SS 1-shot.
# Its baseline is the meta-iterations axis scored at 300 (`compare --at 300`).
# Usage: [METHODS="bidf_mkd"] bash run-axis.sh RESULTS_DIR KEY=VALUE [SLOTS]
#   e.g. bash run-axis.sh axes/per_class-12 method.bidf_mkd.per_class=12
#   METHODS=bidf_mkd for a setting the floor does not read (the generator's: the floor draws noise)
set -euo pipefail
RESULTS="${1:?usage: bash run-axis.sh RESULTS_DIR KEY=VALUE [SLOTS]}"
SETTING="${2:?usage: bash run-axis.sh RESULTS_DIR KEY=VALUE [SLOTS]}"
SLOTS="${3:-2}"
RUN="dfml-bench run --scenario SS --shots 1 --instance dev --results $RESULTS --no-progress \
--set train.val_every=100 --set train.val_episodes=300 --set $SETTING"
jobs=()
for s in 0 1 2; do for m in ${METHODS:-bidf_mkd bidf_mkd_noise}; do jobs+=("$RUN --method $m --seeds $s"); done; done
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -d '\n' -P "$SLOTS" -I{} bash -c '{}'
