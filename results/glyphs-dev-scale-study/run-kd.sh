#!/usr/bin/env bash
# The distillation baseline `kd` at the `long` length with axis 1's query count: its tuned setting
# (../glyphs-sealed-quick-grid/tuning/kd-SS-1shot/winner.yaml: a recovery every meta-iteration, 126k queries
# each) under `--budget 3.8e6`, bidf_mkd's 3.79M queries by 1,000 meta-iterations; the run stops
# when its next recovery would exceed the budget (after 30 meta-iterations), validates and keeps its
# best validation. Dev instance, SS 1-shot, seeds 0-2, 300 meta-val episodes as in axis 1.
# Usage: bash run-kd.sh RESULTS_DIR [SLOTS]   (re-run to resume)
set -euo pipefail
RESULTS="${1:?usage: bash run-kd.sh RESULTS_DIR [SLOTS]}"
SLOTS="${2:-2}"
WINNER="$(cd "$(dirname "$0")/../glyphs-sealed-quick-grid/tuning/kd-SS-1shot" && pwd)/winner.yaml"
RUN="dfml-bench run --profile long --scenario SS --shots 1 --instance dev --results $RESULTS --no-progress \
--config $WINNER --budget 3.8e6 --method kd"
dfml-bench pool build --scenario SS --instance dev --no-progress
printf '%s\n' "$RUN --seeds 0" "$RUN --seeds 1" "$RUN --seeds 2" | OMP_NUM_THREADS=1 xargs -d '\n' -P "$SLOTS" -I{} bash -c '{}'
