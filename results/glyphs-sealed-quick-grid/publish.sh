#!/usr/bin/env bash
# Tabulate the sealed quick grid from the runs in runs/ (meta-test of the sealed instance):
# table.{md,csv} (against bidf_mkd_noise, with the gap closed between random and maml_oracle),
# table-vs-{purer,kd,bidf_mkd,bidf_mkd_plus}.{md,csv} and the plots; then the matched-budget tables
# from budget/runs and budget-2.5e5/runs. Rows appear in the order below once their runs are in a
# runs/ directory (each row is copied in when all three of its seeds have finished). Last, times.md:
# the compute each cell's records cost (times.py).
# Usage: bash publish.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/../glyphs-dev-scale-study/copy-rows.sh"
ORDER="random bidf_mkd_noise average kd purer purer_fo bidf_mkd bidf_mkd_fo bidf_mkd_central
       bidf_mkd_no_boundary bidf_mkd_no_replay bidf_mkd_plus bidf_mkd_wb bidf_mkd_proto maml_oracle_proto maml_oracle"
# rows_in DIR: the methods of ORDER that DIR/runs holds, comma-separated.
rows_in() {
    local m rows=""
    for m in $ORDER; do
        if has_row "$1" "$m"; then rows="${rows:+$rows,}$m"; fi
    done
    echo "$rows"
}
rows="$(rows_in "$HERE")"
for fmt in md csv; do
    dfml-bench compare "$HERE" -m "$rows" --gap random:maml_oracle --against bidf_mkd_noise --format "$fmt" -o "$HERE/table.$fmt"
    for ref in purer kd bidf_mkd bidf_mkd_plus; do
        dfml-bench compare "$HERE" -m "$rows" --against "$ref" --format "$fmt" -o "$HERE/table-vs-$ref.$fmt"
    done
done
dfml-bench compare "$HERE" -m "$rows" --format md --plot "$HERE/plots" -o /dev/null
# Matched budgets: every query-using row at one --budget; the rows that never reach a budget are
# their runs above, copied in.
for b in budget budget-2.5e5; do
    rows="$(rows_in "$HERE/$b")"
    for fmt in md csv; do
        dfml-bench compare "$HERE/$b" -m "$rows" --against bidf_mkd_noise --format "$fmt" -o "$HERE/$b/table.$fmt"
    done
    dfml-bench compare "$HERE/$b" -m "$rows" --against bidf_mkd_wb --format md -o "$HERE/$b/table-vs-bidf_mkd_wb.md"
done
dfml-bench compare "$HERE/budget" -m "$(rows_in "$HERE/budget")" --format md --plot "$HERE/budget/plots" -o /dev/null
python3 "$HERE/times.py"
