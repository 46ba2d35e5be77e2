#!/usr/bin/env bash
# The GPU session's one prepared run (issue 29): the paper's models at their real size through
# benchmarks/paper_scale.py (the plain forward against transformers SDPA, then the sweep three ways),
# with (a) profiled once more (where its time goes, beside the physical limit),
# and the step `sweep2048`: benchmarks/knockout_sweep.py --paper at width 2048 in bf16 with batches of 192,
# the configuration of the H200 figures in the README (24.4 s, 10.3 s, 1.60 s), to see what the engine's
# later changes did to them.
# Prepare here with `bash benchmarks/gpu_wheels.sh`, then run there with carry [".whl"]:
#     bash benchmarks/gpu_check.sh [steps...]   (default: pllava-7b sweep2048 videollama3-7b pllava-13b;
#                                               internvl-4b, qwen2_5_vl-7b and load7b when named: all do not fit one 600 s call)
# load7b: benchmarks/load.py --full-size 7b to CUDA (the whole 7B written as released PLLaVA shards, loaded by videolens and
# by transformers, time to a first forward and peak host RSS), at most LOAD_S seconds (default 300).
# Each step gets at most PER_FAMILY_S seconds (default 140); a failure is logged and the next runs.
# What comes back (the device tool returns at most 8 files): $OUT/results.tar, rewritten after every
# step (its <step>.log printout, <family>.json figures, <family>.profile.txt top operators, and
# device.txt), so a run stopped at its time limit still returns the steps it finished.
# A dry run of every path on this CPU at toy size:  DEVICE=cpu TINY=1 OUT=/tmp/out bash benchmarks/gpu_check.sh pllava-7b sweep2048
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/videolens-gpu-out}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [ -d .whl ] && { [ "$DEVICE" = cuda ] || [ -n "${WHEELS:-}" ]; }; then  # WHEELS=1: install them in a dry run too
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  [ -d .whl/shared ] && export VIDEOLENS_SHARED=$PWD/.whl/shared
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi ($DEVICE)"; } \
  | tee "$WORK/device.txt"
python3 -c "import torch, transformers, transformer_lens; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$WORK/device.txt"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(pllava-7b sweep2048 videollama3-7b pllava-13b)
tiny=()
[ -n "${TINY:-}" ] && tiny=(--tiny --paper-every 44)
for f in "${steps[@]}"; do
  echo "== $f"
  if [ "$f" = load7b ]; then
    if [ -n "${TINY:-}" ]; then size=(--layers 1); else size=(--full-size 7b --folder "$WORK/ck7b"); fi
    timeout "${LOAD_S:-300}" python3 benchmarks/load.py --device "$DEVICE" --reps 1 "${size[@]}" > "$WORK/$f.log" 2>&1
    rc=$?
    rm -rf "$WORK/ck7b"  # 13 GiB of weights: not for the tar
  elif [ "$f" = sweep2048 ]; then
    if [ -n "${TINY:-}" ]; then size=(--layers 4 --width 64 --window 3 --stride 2 --batch-conditions 4); else
      size=(--paper --width 2048 --dtype bfloat16 --batch-conditions 192 --paper-every 16); fi
    timeout "${PER_FAMILY_S:-140}" python3 benchmarks/knockout_sweep.py --device "$DEVICE" "${size[@]}" > "$WORK/$f.log" 2>&1
    rc=$?
  else
    timeout "${PER_FAMILY_S:-140}" python3 benchmarks/paper_scale.py --family "$f" --device "$DEVICE" "${tiny[@]}" \
      --json "$WORK/$f.json" --profile "$WORK/$f.profile.txt" > "$WORK/$f.log" 2>&1
    rc=$?
  fi
  echo "exit $rc"; grep -v "it/s\]" "$WORK/$f.log" | tail -13
  tar -C "$WORK" -cf "$OUT/results.tar.part" . && mv "$OUT/results.tar.part" "$OUT/results.tar"
done
