#!/usr/bin/env bash
# Tabulate `kd` at axis 1's query count (run-kd.sh) on meta-val beside axis 1's rows at 1,000.
# Usage: bash publish-kd.sh RESULTS_DIR   (RESULTS_DIR as given to run-kd.sh)
#   copies kd's finished runs (3 seeds) into kd-budget/runs, links axis 1's random, bidf_mkd_noise
#   and bidf_mkd runs beside them, and writes kd-budget/val.{md,csv} (against bidf_mkd_noise) and
#   kd-budget/vs-kd.{md,csv} (against kd), each run scored by its best validation up to 1,000, and
#   the val-curve plots (against meta-iterations, queries and wall time).
set -euo pipefail
SRC="${1:?usage: bash publish-kd.sh RESULTS_DIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="$HERE/kd-budget"
. "$HERE/copy-rows.sh"
copy_rows "$SRC" "$DEST"
link_axis1 "$DEST" random bidf_mkd_noise bidf_mkd
ROWS=random,bidf_mkd_noise,kd,bidf_mkd
for fmt in md csv; do
    dfml-bench compare "$DEST" --split val --at 1000 -m "$ROWS" --against bidf_mkd_noise --format "$fmt" -o "$DEST/val.$fmt"
    dfml-bench compare "$DEST" --split val --at 1000 -m "$ROWS" --against kd --format "$fmt" -o "$DEST/vs-kd.$fmt"
done
dfml-bench compare "$DEST" --split val --at 1000 -m "$ROWS" --format md --plot "$DEST/plots" -o /dev/null
