#!/usr/bin/env bash
# Tabulate the suite's variant (and whichever of its ablations have finished) at the `long` profile
# on dev meta-val, beside axis 1's bidf_mkd and floor runs (the same settings as `--profile long`).
# Usage: bash publish-variant.sh RESULTS_DIR   (the --results of the variant's runs)
#   copies rows with 3 finished seeds into variant/runs, links axis 1's runs beside them and writes
#   variant/val-at-{300,1000}.{md,csv} (against bidf_mkd), variant/floor-at-{300,1000}.{md,csv}
#   (against bidf_mkd_noise) and variant/ablations-at-{300,1000}.{md,csv} (against bidf_mkd_plus).
set -euo pipefail
SRC="${1:?usage: bash publish-variant.sh RESULTS_DIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/variant"
. "$HERE/copy-rows.sh"
copy_rows "$SRC" "$OUT"
for run in "$HERE"/iterations/runs/bidf_mkd-* "$HERE"/iterations/runs/bidf_mkd_noise-* "$HERE"/iterations/runs/random-*; do
    ln -sfn "../../iterations/runs/$(basename "$run")" "$OUT/runs/$(basename "$run")"
done
variants="$(ls "$OUT/runs" | sed -n 's/^\(bidf_mkd_plus[a-z_]*\)-SS-.*/\1/p' | sort -u | paste -sd,)"
rows="random,bidf_mkd_noise,bidf_mkd,$variants"
for n in 300 1000; do
    for fmt in md csv; do
        dfml-bench compare "$OUT" --split val --at "$n" -m "$rows" --against bidf_mkd --format "$fmt" -o "$OUT/val-at-$n.$fmt"
        dfml-bench compare "$OUT" --split val --at "$n" -m "$rows" --against bidf_mkd_noise --format "$fmt" -o "$OUT/floor-at-$n.$fmt"
        if [ "$variants" != bidf_mkd_plus ]; then
            dfml-bench compare "$OUT" --split val --at "$n" -m "bidf_mkd,$variants" --against bidf_mkd_plus \
                --format "$fmt" -o "$OUT/ablations-at-$n.$fmt"
        fi
    done
done
dfml-bench compare "$OUT" --split val --at 1000 -m "$rows" --format md --plot "$OUT/plots" -o /dev/null
