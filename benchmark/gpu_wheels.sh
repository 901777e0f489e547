#!/usr/bin/env bash
# The wheels that benchmark/gpu.sh needs on the lent GPU machine (Python 3.12, torch 2.11, transformers 5.17, no
# network; no minigrid, gymnasium or tyro), downloaded here into .whl/ (ignored by git), which travels with the tree:
# what that machine lacks (minigrid and pygame-ce, which it imports; gymnasium and farama-notifications; tyro,
# docstring-parser and typeguard; gguf, for the learning step's SmolLM2 GGUF) or has at another version (transformers:
# requirements.txt pins 5.24).
# Then, without the network: pip resolves each wheel for Python 3.12 on manylinux x86_64 from .whl/ alone, and every
# requirement of every wheel is met by a wheel of the set or by a package the machine has (at its recorded version,
# where one is recorded). Prints the set and its total size, which must stay under 60 MiB.
#   bash benchmark/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  transformers==5.24.0 minigrid==3.2.0 pygame-ce==2.5.8 gymnasium==1.4.0 farama-notifications==0.0.6
  tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 gguf==0.19.0
)
TARGET=(
  --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
)
rm -rf .whl && mkdir .whl
python -m pip download --quiet --no-deps "${TARGET[@]}" --dest .whl "${WHEELS[@]}"
python -m pip install --quiet --dry-run --ignore-installed --no-index --find-links .whl --no-deps "${TARGET[@]}" \
  --target "$(mktemp -d)" "${WHEELS[@]}"
python - "${WHEELS[@]}" <<'EOF'
import glob, sys, zipfile
from email.parser import Parser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The GPU machine's image, as the device tool's KINDS.md lists it (2026-11-17), with the versions recorded there.
MACHINE = {
    "torch": "2.11.0", "numpy": "2.5.2", "huggingface-hub": "1.33.0", "tokenizers": "0.23.2", "safetensors": "0.8.0",
    "accelerate": "1.15.0", "transformers": "5.17.0", "triton": "3.6.0", **dict.fromkeys([
        "cloudpickle", "typing-extensions", "regex", "pyyaml", "packaging", "tqdm", "typer", "psutil", "pillow",
        "tensorboard", "peft", "matplotlib", "filelock", "fsspec", "jinja2", "networkx", "sympy", "rich", "requests",
    ]),
}
ENVIRONMENT = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
               "platform_machine": "x86_64", "implementation_name": "cpython", "os_name": "posix", "extra": ""}
carried = {}
for path in sorted(glob.glob(".whl/*.whl")):
    with zipfile.ZipFile(path) as wheel:
        metadata = Parser().parsestr(wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    carried[canonicalize_name(metadata["Name"])] = (metadata["Version"], metadata.get_all("Requires-Dist") or [])
asked = {canonicalize_name(Requirement(spec).name) for spec in sys.argv[1:]}
problems = [f"{name}: asked for, no wheel" for name in asked - carried.keys()]
for name, (version, requirements) in carried.items():
    for requirement in map(Requirement, requirements):
        if requirement.marker is not None and not requirement.marker.evaluate(ENVIRONMENT):
            continue
        needed = canonicalize_name(requirement.name)
        found = carried[needed][0] if needed in carried else MACHINE.get(needed, "missing")
        if found == "missing" or (found is not None and not requirement.specifier.contains(found, prereleases=True)):
            problems.append(f"{name} {version} needs {requirement}: {'not on the machine' if found == 'missing' else found}")
if problems:
    sys.exit("gpu_wheels.sh: error: the set does not resolve:\n  " + "\n  ".join(problems))
print(f"{len(carried)} wheels for Python 3.12, manylinux x86_64, resolved offline against themselves and the machine's packages:")
EOF
ls -1 .whl
size=$(du -cb .whl/*.whl | tail -n 1 | cut -f1)
echo "total: $((size / 1048576)) MiB ($size bytes); carry it: run(..., carry=[\".whl\"])"
if [ "$size" -ge $((60 * 1048576)) ]; then
  echo "gpu_wheels.sh: error: the wheels take $((size / 1048576)) MiB, over the 60 MiB that may travel with the tree" >&2
  exit 1
fi
