#!/usr/bin/env bash
# The GPU session's one prepared run (issue 29): the paper's models at their real size through
# benchmarks/paper_scale.py, each family's figures in $OUT/<family>.json and its printout in
# $OUT/<family>.log, then the batched-engine comparison at width 2048 (knockout_sweep.py --paper).
# Prepare here with `bash benchmarks/gpu_wheels.sh`, then run there with carry [".whl"]:
#     bash benchmarks/gpu_check.sh [families...]        (default: pllava-7b videollama3-7b internvl-4b pllava-13b;
#                                                        qwen2_5_vl-7b when named: the five do not fit one 600 s call)
# Each family gets at most PER_FAMILY_S seconds (default 150); a failure is logged and the next runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/videolens-gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  [ -d .whl/shared ] && export VIDEOLENS_SHARED=$PWD/.whl/shared
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, transformer_lens; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
families=("$@")
[ ${#families[@]} -eq 0 ] && families=(pllava-7b videollama3-7b internvl-4b pllava-13b)
for f in "${families[@]}"; do
  echo "== $f"
  timeout "${PER_FAMILY_S:-150}" python3 benchmarks/paper_scale.py --family "$f" --device cuda --json "$OUT/$f.json" \
    > "$OUT/$f.log" 2>&1
  echo "exit $?"; grep -v "it/s\]" "$OUT/$f.log" | tail -12
done
