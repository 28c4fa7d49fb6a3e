#!/usr/bin/env bash
# Tabulate the sealed `long` evaluation from its finished runs (meta-test of the sealed instance).
# Usage: bash publish.sh RESULTS_DIR   (RESULTS_DIR as given to run.sh)
#   copies every row with 3 finished seeds into runs/ (records only), links the ceiling's runs from
#   ../glyphs-sealed-quick-grid (maml_oracle trains to 2,000 meta-iterations under both profiles),
#   and writes table.{md,csv} (against bidf_mkd_noise), table-vs-bidf_mkd.{md,csv}, table-vs-bidf_mkd_plus_noise.{md,csv}
#   (when the variant's floor has run), table-vs-kd.{md,csv} (when kd has run), the plots, and
#   vs-quick/table.{md,csv}: each long row paired with the same method's quick sealed runs.
set -euo pipefail
SRC="${1:?usage: bash publish.sh RESULTS_DIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
QUICK="$HERE/../glyphs-sealed-quick-grid"
. "$HERE/../glyphs-dev-scale-study/copy-rows.sh"
copy_rows "$SRC" "$HERE"
for run in "$QUICK"/runs/maml_oracle-*; do
    ln -sfn "../../glyphs-sealed-quick-grid/runs/$(basename "$run")" "$HERE/runs/$(basename "$run")"
done
rows=random,bidf_mkd_noise,bidf_mkd
for m in bidf_mkd_plus_noise bidf_mkd_plus kd; do if has_row "$HERE" "$m"; then rows="$rows,$m"; fi; done
rows="$rows,maml_oracle"
G=(--gap random:maml_oracle)
for fmt in md csv; do
    dfml-bench compare "$HERE" -m "$rows" "${G[@]}" --against bidf_mkd_noise --format "$fmt" -o "$HERE/table.$fmt"
    dfml-bench compare "$HERE" -m "$rows" --against bidf_mkd --format "$fmt" -o "$HERE/table-vs-bidf_mkd.$fmt"
    if has_row "$HERE" kd; then
        dfml-bench compare "$HERE" -m "$rows" --against kd --format "$fmt" -o "$HERE/table-vs-kd.$fmt"
    fi
    if has_row "$HERE" bidf_mkd_plus_noise; then
        dfml-bench compare "$HERE" -m "$rows" --against bidf_mkd_plus_noise --format "$fmt" -o "$HERE/table-vs-bidf_mkd_plus_noise.$fmt"
    fi
done
dfml-bench compare "$HERE" -m "$rows" --format md --plot "$HERE/plots" -o /dev/null
# The quick sealed runs beside the long ones: each label names its profile's settings.
VQ="$HERE/vs-quick"
rm -rf "$VQ/runs"; mkdir -p "$VQ/runs"
for m in bidf_mkd_noise bidf_mkd; do
    for run in "$HERE"/runs/"$m"-SS-* "$QUICK"/runs/"$m"-SS-*; do
        ln -sfn "$(realpath --relative-to="$VQ/runs" "$run")" "$VQ/runs/$(basename "$run")"
    done
done
REF="$(dfml-bench compare "$VQ" --format csv | python3 -c '
import csv, sys
print(next(r["method"] for r in csv.DictReader(sys.stdin) if r["method"].startswith("bidf_mkd [profile=quick")))')"
for fmt in md csv; do
    dfml-bench compare "$VQ" --against "$REF" --format "$fmt" -o "$VQ/table.$fmt"
done
