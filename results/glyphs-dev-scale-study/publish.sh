#!/usr/bin/env bash
# Tabulate the scale study's meta-iterations axis from its finished runs, on meta-val only.
# Usage: bash publish.sh RESULTS_DIR   (RESULTS_DIR as given to run-iterations.sh)
#   copies the finished runs of every method with 3 finished seeds into iterations/runs (records only, no checkpoints), then writes
#   iterations/val-at-N.{md,csv}: each run's best validation up to meta-iteration N, with the
#   paired difference to bidf_mkd_noise; iterations/probe-at-N.{md,csv}: the real-image probe
#   against bidf_mkd at N = 300 (the quick length) and 1000; iterations/agreement.md; and the plots.
set -euo pipefail
SRC="${1:?usage: bash publish.sh RESULTS_DIR}"
AXIS="$(dirname "$0")/iterations"
. "$(dirname "$0")/copy-rows.sh"
copy_rows "$SRC" "$AXIS"
ROWS=random,bidf_mkd_noise,bidf_mkd
GAP=()
if has_row "$AXIS" maml_oracle; then ROWS="$ROWS,maml_oracle"; GAP=(--gap random:maml_oracle); fi
for n in 100 200 300 400 500 600 700 800 900 1000; do
    for fmt in md csv; do
        dfml-bench compare "$AXIS" --split val --at "$n" -m "$ROWS" "${GAP[@]}" --against bidf_mkd_noise \
            --format "$fmt" -o "$AXIS/val-at-$n.$fmt"
    done
done
if has_row "$AXIS" bidf_mkd_real; then
    for n in 300 1000; do
        for fmt in md csv; do
            dfml-bench compare "$AXIS" --split val --at "$n" -m bidf_mkd_noise,bidf_mkd,bidf_mkd_real --against bidf_mkd \
                --format "$fmt" -o "$AXIS/probe-at-$n.$fmt"
        done
    done
fi
AGREE=bidf_mkd; if has_row "$AXIS" bidf_mkd_real; then AGREE="$AGREE,bidf_mkd_real"; fi
dfml-bench compare "$AXIS" --metric agreement -m "$AGREE" --format md -o "$AXIS/agreement.md"
dfml-bench compare "$AXIS" --split val --at 1000 --format md --plot "$AXIS/plots" -o /dev/null
# One line per length N: the two rows and their paired difference, from the val-at-N tables.
python3 - "$AXIS" <<'PY'
import csv, sys
from pathlib import Path
axis = Path(sys.argv[1])
lines = ["| N | bidf_mkd | bidf_mkd_noise | Δ bidf_mkd - noise [95 % CI] | bidf_mkd queries by N |",
         "|---|---|---|---|---|"]
for n in range(100, 1001, 100):
    rows = {r["method"]: r for r in csv.DictReader(open(axis / f"val-at-{n}.csv"))}
    b, f = rows["bidf_mkd"], rows["bidf_mkd_noise"]
    star = "*" if b["significant"] == "True" else ""
    lines.append(f"| {n} | {float(b['mean']):.2f} ± {float(b['ci95']):.2f} | {float(f['mean']):.2f} ± {float(f['ci95']):.2f} "
                 f"| {float(b['diff']):+.2f} [{float(b['diff_low']):+.2f}, {float(b['diff_high']):+.2f}]{star} "
                 f"| {float(b['queries']) / 1e6:.2f}M |")
(axis / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
