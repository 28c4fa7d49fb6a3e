#!/usr/bin/env bash
# Tabulate the sealed quick SS 1-shot table from the runs in runs/ (meta-test of the sealed instance):
# table.{md,csv} (against bidf_mkd_noise, with the gap closed between random and maml_oracle),
# table-vs-{purer,kd,bidf_mkd,bidf_mkd_plus}.{md,csv} and the plots. Rows appear in the order below once their
# runs are in runs/ (each row is copied in when all three of its seeds have finished).
# Usage: bash publish.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/../glyphs-dev-scale-study/copy-rows.sh"
rows=""
for m in random bidf_mkd_noise average kd purer purer_fo bidf_mkd bidf_mkd_fo bidf_mkd_central \
         bidf_mkd_no_boundary bidf_mkd_no_replay bidf_mkd_plus bidf_mkd_wb bidf_mkd_proto maml_oracle_proto maml_oracle; do
    if has_row "$HERE" "$m"; then rows="${rows:+$rows,}$m"; fi
done
for fmt in md csv; do
    dfml-bench compare "$HERE" -m "$rows" --gap random:maml_oracle --against bidf_mkd_noise --format "$fmt" -o "$HERE/table.$fmt"
    for ref in purer kd bidf_mkd bidf_mkd_plus; do
        dfml-bench compare "$HERE" -m "$rows" --against "$ref" --format "$fmt" -o "$HERE/table-vs-$ref.$fmt"
    done
done
dfml-bench compare "$HERE" -m "$rows" --format md --plot "$HERE/plots" -o /dev/null
