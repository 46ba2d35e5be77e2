#!/usr/bin/env bash
# The GPU session's one prepared run (issue 29): the paper's models at their real size through
# benchmarks/paper_scale.py, with (a) profiled once more (where its time goes, beside the physical limit).
# Prepare here with `bash benchmarks/gpu_wheels.sh`, then run there with carry [".whl"]:
#     bash benchmarks/gpu_check.sh [families...]        (default: pllava-7b videollama3-7b internvl-4b pllava-13b;
#                                                        qwen2_5_vl-7b when named: the five do not fit one 600 s call)
# Each family gets at most PER_FAMILY_S seconds (default 150); a failure is logged and the next runs.
# What comes back (the device tool returns at most 8 files): $OUT/results.tar, rewritten after every
# family (its <family>.log printout, <family>.json figures, <family>.profile.txt top operators, and
# device.txt), so a run stopped at its time limit still returns the families it finished.
# A dry run of every path on this CPU at toy size:  DEVICE=cpu TINY=1 OUT=/tmp/out bash benchmarks/gpu_check.sh pllava-7b
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
families=("$@")
[ ${#families[@]} -eq 0 ] && families=(pllava-7b videollama3-7b internvl-4b pllava-13b)
extra=()
[ -n "${TINY:-}" ] && extra=(--tiny --paper-every 44)
for f in "${families[@]}"; do
  echo "== $f"
  timeout "${PER_FAMILY_S:-150}" python3 benchmarks/paper_scale.py --family "$f" --device "$DEVICE" "${extra[@]}" \
    --json "$WORK/$f.json" --profile "$WORK/$f.profile.txt" > "$WORK/$f.log" 2>&1
  echo "exit $?"; grep -v "it/s\]" "$WORK/$f.log" | tail -13
  tar -C "$WORK" -cf "$OUT/results.tar.part" . && mv "$OUT/results.tar.part" "$OUT/results.tar"
done
