#!/usr/bin/env bash
# Sealed-instance evaluation of the `long` profile (results/glyphs-dev-scale-study chose it on dev
# meta-val): SS 5-way 1-shot, seeds 0-2, each method at its tuned settings, which at the quick
# profile were the profile's own for every row here (results/glyphs-sealed-quick-grid/tuning).
# Usage: bash run.sh RESULTS_DIR [SLOTS]   (SLOTS jobs at once, 1 torch thread each; a finished run
# is skipped on a re-run and an unfinished one resumes from its checkpoint, so the same command resumes)
set -euo pipefail
RESULTS="${1:?usage: bash run.sh RESULTS_DIR [SLOTS]}"
SLOTS="${2:-2}"
RUN="dfml-bench run --profile long --scenario SS --shots 1 --instance sealed --results $RESULTS --no-progress"
dfml-bench pool build --scenario SS --instance sealed --no-progress
# The method beside its floor seed by seed, then the untrained floor. The ceiling maml_oracle trains
# the same under both profiles (profiles/quick.yaml's per-method override), so publish.sh takes its
# runs from ../glyphs-sealed-quick-grid.
jobs=()
for s in 0 1 2; do jobs+=("$RUN --method bidf_mkd --seeds $s" "$RUN --method bidf_mkd_noise --seeds $s"); done
jobs+=("$RUN --method random --seeds 0,1,2")
# The suite's variant and its own noise floor, run once its departures had been judged on dev
# meta-val (results/glyphs-dev-scale-study, "The suite's variant").
for s in 0 1 2; do jobs+=("$RUN --method bidf_mkd_plus --seeds $s"); done
for s in 0 1 2; do jobs+=("$RUN --method bidf_mkd_plus_noise --seeds $s"); done
# The distillation baseline at bidf_mkd's query count: its tuned setting (a recovery every
# meta-iteration) under a 3.8e6 budget stops after 30 meta-iterations (../glyphs-dev-scale-study/run-kd.sh).
KD="--config $(cd "$(dirname "$0")/../glyphs-sealed-quick-grid/tuning/kd-SS-1shot" && pwd)/winner.yaml --budget 3.8e6"
for s in 0 1 2; do jobs+=("$RUN --method kd $KD --seeds $s"); done
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -d '\n' -P "$SLOTS" -I{} bash -c '{}'
