# Sourced by the publish scripts. copy_rows SRC DEST copies the records (no checkpoints)
# of each finished run in SRC/runs whose method has all three seeds finished into DEST/runs;
# an unfinished run, or a row still missing a seed, is never published.
copy_rows() {
    local src="$1" dest="$2" run method f
    mkdir -p "$dest/runs"
    for run in "$src"/runs/*/; do
        [ -f "$run/result.json" ] || continue
        method="$(basename "$run" | sed 's/-SS-1shot-.*//')"
        [ "$(ls -d "$src"/runs/"$method"-SS-1shot-s*-*/result.json 2>/dev/null | wc -l)" -ge 3 ] || continue
        mkdir -p "$dest/runs/$(basename "$run")"
        for f in config.yaml metrics.jsonl result.json val_episodes.jsonl recovered.png; do
            if [ -f "$run/$f" ]; then cp "$run/$f" "$dest/runs/$(basename "$run")/"; fi
        done
    done
}

# has_row DIR METHOD: whether DIR/runs holds runs of METHOD. A glob, not `ls | grep -q`: under
# `set -o pipefail` grep's early exit can kill ls with SIGPIPE and drop a row at random.
has_row() {
    local run
    for run in "$1/runs/$2"-*; do [ -e "$run" ] && return 0; done
    return 1
}

# link_axis1 DEST METHOD...: link the meta-iterations axis's runs of each METHOD into DEST/runs.
link_axis1() {
    local dest="$1" method run
    shift
    for method in "$@"; do
        for run in "$(dirname "${BASH_SOURCE[0]}")"/iterations/runs/"$method"-SS-*; do
            ln -sfn "../../iterations/runs/$(basename "$run")" "$dest/runs/$(basename "$run")"
        done
    done
}
