#!/usr/bin/env bash
# Fetch, on this machine, the wheels the GPU machine lacks (it has torch, numpy, pandas,
# safetensors, tokenizers, huggingface_hub, einops, jaxtyping, matplotlib, scipy, but no network):
# transformer_lens and the versions of transformers / datasets this project is tested with, for
# its Python 3.12 x86-64, and what transformers 5.25 checks at import and that image has older
# (huggingface_hub >= 2.4 with its httpx2, regex >= 2025.10.22; the image: hub 1.33). Checked in a
# Python 3.12 venv holding the image's versions (torch 2.11, imageio without ffmpeg, no decord), every step:
#     DEVICE=cpu TINY=1 WHEELS=1 bash benchmarks/gpu_check.sh pllava-7b sweep2048 videollama3-7b pllava-13b internvl-4b qwen2_5_vl-7b load7b
# They land in .whl/ (ignored by git); benchmarks/gpu_check.sh installs
# them there. Run once before a GPU session's first call:  bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl \
  transformer_lens==3.9.0 transformers==5.25.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 better-abc==0.0.3 \
  beartype==0.23.1 fancy-einsum==0.0.3 typeguard==4.6.1 kernels==0.19.1 \
  decord==0.6.0 \
  huggingface_hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 click==8.5.1 hf-xet==1.8.0 \
  regex==2026.5.9 tomlkit==0.15.3
# the LLaMA tokenizer and one real clip of ../shared, which does not travel (VIDEOLENS_SHARED there)
rm -rf .whl/shared && mkdir -p .whl/shared/tokenizers .whl/shared/data/videos
if [ -d ../shared ]; then
  cp -r ../shared/tokenizers/llama .whl/shared/tokenizers/
  cp ../shared/data/videos/cockatoo.mp4 .whl/shared/data/videos/
fi
du -sh .whl
