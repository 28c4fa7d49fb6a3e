#!/usr/bin/env bash
# Copy finished records into this grid (records only, never a checkpoint or an unfinished run).
# Usage: bash collect.sh DIR...   (each DIR a `dfml-bench tune --results` or `run --results` root)
#   - a finished study DIR/tune/METHOD-SC-Kshot-HASH/ (winner.yaml written) -> tuning/METHOD-SC-Kshot/
#   - a finished sealed run DIR/runs/ID/ (result.json written, no --budget) not yet in runs/ -> pending/runs/ID/
# Then every row of a cell (METHOD-SC-Kshot) with three seeds in pending/ moves to runs/, where
# publish.sh tables it; a row still missing a seed waits in pending/, untabled.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
RECORDS="config.yaml metrics.jsonl result.json"   # a study's trial runs; sealed runs add recovered.png

# copy_records SRC DEST [FILE...]: the record files (RECORDS, then each FILE) of run directory SRC into DEST.
copy_records() {
    local f src="$1" dest="$2"
    shift 2
    mkdir -p "$dest"
    for f in $RECORDS "$@"; do
        if [ -f "$src/$f" ]; then cp "$src/$f" "$dest/"; fi
    done
}

for root in "$@"; do
    for study in "$root"/tune/*/; do
        [ -f "$study/winner.yaml" ] || continue
        [[ "$(basename "$study")" =~ -[0-9a-f]+$ ]] || continue   # not a study dir tune wrote (e.g. a hand-made copy)
        name="$(basename "$study" | sed 's/-[0-9a-f]*$//')"
        dest="$HERE/tuning/$name"
        mkdir -p "$dest"
        cp "$study"/study.json "$study"/trials.csv "$study"/trials.md "$study"/winner.yaml "$dest/"
        for run in "$study"/runs/*/; do
            if [ -f "$run/result.json" ]; then copy_records "$run" "$dest/runs/$(basename "$run")"; fi
        done
        echo "study $name"
    done
    for run in "$root"/runs/*/; do
        [ -f "$run/result.json" ] && [ ! -d "$HERE/runs/$(basename "$run")" ] || continue   # published already
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(r.get("instance") != "sealed" or r.get("budget") is not None)' \
            "$run/result.json" || continue
        copy_records "$run" "$HERE/pending/runs/$(basename "$run")" recovered.png
    done
done

# A cell's row is complete when three of its seeds (METHOD-SC-Kshot-sN-HASH) are in pending/.
if [ -d "$HERE/pending/runs" ]; then
    for cell in $(ls "$HERE/pending/runs" | sed 's/-s[0-9]*-[0-9a-f]*$//' | sort -u); do
        runs=$(ls -d "$HERE/pending/runs/$cell"-s*-*/ 2>/dev/null | grep -E -- "/$cell-s[0-9]+-[0-9a-f]+/$" || true)
        n=$(echo -n "$runs" | grep -c . || true)
        [ "$n" -ge 3 ] || { echo "pending $cell ($n seed(s))"; continue; }
        for run in $runs; do mv "$run" "$HERE/runs/"; done
        echo "row $cell: 3 seeds -> runs/"
    done
    rmdir "$HERE/pending/runs" "$HERE/pending" 2>/dev/null || true
fi
