#!/usr/bin/env bash
# Tabulate one axis of the scale study from its finished runs, on meta-val only.
# Usage: bash publish.sh RESULTS_DIR AXIS_DIR "N1 N2 ..."
#   copies the finished runs of RESULTS_DIR/runs into AXIS_DIR/runs (records only, no checkpoints),
#   then writes AXIS_DIR/val.{md,csv} (each run's best validation) and AXIS_DIR/val-at-N.{md,csv}
#   (best validation up to meta-iteration N) with paired differences against bidf_mkd_noise and
#   against bidf_mkd, and the plots.
set -euo pipefail
SRC="${1:?usage: bash publish.sh RESULTS_DIR AXIS_DIR \"N1 N2 ...\"}"
AXIS="${2:?}"
AT="${3:-}"
mkdir -p "$AXIS/runs"
for run in "$SRC"/runs/*/; do
    [ -f "$run/result.json" ] || continue           # unfinished: never published
    dest="$AXIS/runs/$(basename "$run")"
    mkdir -p "$dest"
    for f in config.yaml metrics.jsonl result.json val_episodes.jsonl recovered.png; do
        [ -f "$run/$f" ] && cp "$run/$f" "$dest/"
    done
done
have() { ls "$AXIS/runs" | grep -q "^$1-"; }
GAP=(); have random && have maml_oracle && GAP=(--gap random:maml_oracle)
table() {  # table NAME [compare options...]
    local name="$1"; shift
    for ref in bidf_mkd_noise bidf_mkd; do
        have "$ref" || continue
        dfml-bench compare "$AXIS" --split val "${GAP[@]}" --against "$ref" "$@" --format md -o "$AXIS/$name-vs-$ref.md"
        dfml-bench compare "$AXIS" --split val "${GAP[@]}" --against "$ref" "$@" --format csv -o "$AXIS/$name-vs-$ref.csv"
    done
}
table val
for n in $AT; do table "val-at-$n" --at "$n"; done
dfml-bench compare "$AXIS" --split val --format md --plot "$AXIS/plots" -o /dev/null
