#!/usr/bin/env bash
# Tabulate one grown axis (run-axis.sh) on meta-val at the quick length, 300 meta-iterations.
# Usage: bash publish-axis.sh RESULTS_DIR NAME   (e.g. bash publish-axis.sh study-per_class per_class-12)
#   copies the axis's finished rows (3 seeds) into NAME/runs, links the quick-scale baseline runs of
#   iterations/runs beside them (the same settings but the axis's, trained 1000 and scored at 300),
#   and writes NAME/vs-quick.{md,csv} (each row against the baseline bidf_mkd) and
#   NAME/vs-floor.{md,csv} (each row against the grown axis's own noise floor; for a setting the
#   floor does not read, run with METHODS=bidf_mkd, against the baseline floor).
set -euo pipefail
SRC="${1:?usage: bash publish-axis.sh RESULTS_DIR NAME}"
HERE="$(cd "$(dirname "$0")" && pwd)"
AXIS="$HERE/${2:?usage: bash publish-axis.sh RESULTS_DIR NAME}"
. "$(dirname "$0")/copy-rows.sh"
copy_rows "$SRC" "$AXIS"
link_axis1 "$AXIS" bidf_mkd bidf_mkd_noise
# Row labels name the settings in which a method's runs differ; pick the references among them.
labels="$(dfml-bench compare "$AXIS" --split val --at 300 --format csv | python3 -c '
import csv, sys
rows = [r["method"] for r in csv.DictReader(sys.stdin)]
quick = next(m for m in rows if m.startswith("bidf_mkd [") and "meta_iterations=1000" in m)
own = [m for m in rows if m.startswith("bidf_mkd_noise [") and "meta_iterations=1000" not in m]
base = [m for m in rows if m.startswith("bidf_mkd_noise")]
print(quick); print((own or base)[0])')"
QUICK="$(sed -n 1p <<< "$labels")"; FLOOR="$(sed -n 2p <<< "$labels")"
for fmt in md csv; do
    dfml-bench compare "$AXIS" --split val --at 300 --against "$QUICK" --format "$fmt" -o "$AXIS/vs-quick.$fmt"
    dfml-bench compare "$AXIS" --split val --at 300 --against "$FLOOR" --format "$fmt" -o "$AXIS/vs-floor.$fmt"
done
dfml-bench compare "$AXIS" --split val --at 300 --format md --plot "$AXIS/plots" -o /dev/null
