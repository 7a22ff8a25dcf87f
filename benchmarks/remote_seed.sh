#!/usr/bin/env bash
# Continue a benchmark seed on a machine that cannot download (a lent GPU, a cluster node) and bring
# back its seed record (benchmarks/records.py). The assets travel as a bundle of parts, each small
# enough for a size-limited transfer.
#
# Here, with the assets cached (`fedproxy fetch --config converge-qa`), BUNDLE in a folder git ignores:
#   bash benchmarks/remote_seed.sh pack BUNDLE [PART_MB]
#     BUNDLE/0, BUNDLE/1, ...: the cached model and BIG-bench files as a split .tar.gz, under PART_MB
#     (default 50) each; BUNDLE/wheels: transformers and gguf (pure Python) for a Python with torch.
# There, from the repository root:
#   bash benchmarks/remote_seed.sh stash DIR... STASH     # copy parts somewhere that outlives the transfer
#   bash benchmarks/remote_seed.sh seed PARTS_DIRS RECORD RUN OUTDIR -- fedproxy-run-args...
#     PARTS_DIRS: a colon-separated list of folders holding the parts (and wheels/); unpacks them into
#     $FEDPROXY_CACHE (default /tmp/fedproxy-cache), restores RECORD into RUN, runs the seed's methods
#     left with --resume, and saves the record into OUTDIR/RECORD's name after every finished method.
set -euo pipefail
cmd=${1:?pack, stash or seed}; shift
case "$cmd" in
pack)
  bundle=${1:?BUNDLE}; mb=${2:-50}
  cache=${FEDPROXY_CACHE:-$HOME/.cache/fedproxy}
  [ -d "$cache/models" ] && [ -d "$cache/bigbench" ] || { echo "no assets in $cache: run fedproxy fetch first" >&2; exit 1; }
  mkdir -p "$bundle/wheels" "$bundle/tmp"
  tar -C "$cache" -czf - $(cd "$cache" && ls -d models/*/*.gguf bigbench/*.json) | split -b "${mb}m" -d - "$bundle/tmp/part."
  i=0; for p in "$bundle"/tmp/part.*; do mkdir -p "$bundle/$i"; mv "$p" "$bundle/$i/"; i=$((i + 1)); done
  rmdir "$bundle/tmp"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$bundle/wheels" \
    "transformers==$(python3 -c 'import transformers; print(transformers.__version__)')" \
    "gguf==$(python3 -c 'import importlib.metadata as m; print(m.version("gguf"))')"
  du -sh "$bundle"/*
  ;;
stash)
  stash=${!#}; mkdir -p "$stash"
  for d in "${@:1:$#-1}"; do cp -r "$d"/. "$stash/"; done
  ;;
seed)
  dirs=${1:?PARTS_DIRS}; record=${2:?RECORD}; run=${3:?RUN}; outdir=${4:?OUTDIR}; shift 4
  [ "${1:-}" = "--" ] && shift
  export FEDPROXY_CACHE=${FEDPROXY_CACHE:-/tmp/fedproxy-cache}
  mkdir -p "$FEDPROXY_CACHE" "$outdir"
  IFS=: read -ra ds <<< "$dirs"
  # the parts in their order (part.00, part.01, ...), wherever each lies
  for d in "${ds[@]}"; do for p in "$d"/part.*; do if [ -e "$p" ]; then echo "$(basename "$p") $p"; fi; done; done | sort | cut -d' ' -f2- \
    | xargs cat | tar -C "$FEDPROXY_CACHE" -xzf -
  for d in "${ds[@]}"; do
    if ls "$d"/wheels/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$d"/wheels/*.whl
    fi
  done
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}
  [ -f "$record" ] && python3 benchmarks/records.py restore "$record" "$run"
  saved="$outdir/$(basename "$record")"
  python3 -c "import sys; from fedproxy.cli import main; sys.exit(main())" run --out "$run" --resume --quiet "$@" & pid=$!
  # a save each time a method finishes, so a run cut off by a time limit keeps what it finished
  python3 benchmarks/records.py watch "$run" "$saved" --pid $pid >/dev/null & watcher=$!
  wait $pid || rc=$?
  kill $watcher 2>/dev/null || true
  python3 benchmarks/records.py save "$run" "$saved" || true
  exit ${rc:-0}
  ;;
*) echo "unknown command $cmd: pack, stash or seed" >&2; exit 2 ;;
esac
