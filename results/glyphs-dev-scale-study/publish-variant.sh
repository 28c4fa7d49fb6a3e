#!/usr/bin/env bash
# Tabulate the suite's variant (run-variant.sh) on dev meta-val beside axis 1's runs, which have the
# settings of `--profile long`.
# Usage: bash publish-variant.sh RESULTS_DIR   (the --results of run-variant.sh)
#   copies rows with 3 finished seeds into variant/runs, links axis 1's random, bidf_mkd and
#   bidf_mkd_noise runs beside them, and writes (.md and .csv each):
#   variant/val-at-N      N = 300, 1000: every long row against bidf_mkd (the paper's method);
#   variant/floor-at-N    the same rows against bidf_mkd_plus_noise (the variant's own floor);
#   variant/ablations-at-300  each ablation (trained 300) against bidf_mkd_plus scored at 300.
set -euo pipefail
SRC="${1:?usage: bash publish-variant.sh RESULTS_DIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/variant"
. "$HERE/copy-rows.sh"
copy_rows "$SRC" "$OUT"
link_axis1 "$OUT" random bidf_mkd bidf_mkd_noise
rows=random,bidf_mkd_noise,bidf_mkd
for m in bidf_mkd_plus_noise bidf_mkd_plus; do if has_row "$OUT" "$m"; then rows="$rows,$m"; fi; done
ablations=""
for a in no_permute memory_replay no_filter all_support; do
    if has_row "$OUT" "bidf_mkd_plus_$a"; then ablations="$ablations,bidf_mkd_plus_$a"; fi
done
for fmt in md csv; do
    for n in 300 1000; do
        dfml-bench compare "$OUT" --split val --at "$n" -m "$rows" --against bidf_mkd --format "$fmt" -o "$OUT/val-at-$n.$fmt"
        if has_row "$OUT" bidf_mkd_plus_noise; then
            dfml-bench compare "$OUT" --split val --at "$n" -m "$rows" --against bidf_mkd_plus_noise \
                --format "$fmt" -o "$OUT/floor-at-$n.$fmt"
        fi
    done
    if [ -n "$ablations" ]; then
        dfml-bench compare "$OUT" --split val --at 300 -m "bidf_mkd_plus_noise,bidf_mkd,bidf_mkd_plus$ablations" \
            --against bidf_mkd_plus --format "$fmt" -o "$OUT/ablations-at-300.$fmt"
    fi
done
dfml-bench compare "$OUT" --split val --at 1000 -m "$rows" --format md --plot "$OUT/plots" -o /dev/null
