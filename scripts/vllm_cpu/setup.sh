#!/usr/bin/env bash
# Create the vLLM CPU venv that tests/vllm serves tiny models from: the `cpu`
# variant of the per-model envs, built by the same mechanism as
# `make env-glm45v` & co. (scripts/envs/build.sh, from
# images/cpu/requirements.lock; images/cpu/post-install.sh makes torchvision
# ops-less and gives the env a working bin/vllm).
#
# Environment:
#   COOOL_VLLM_VENV   where to make the venv (default: <repo>/envs/cpu)
#   FORCE=1           rebuild even when up to date
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
exec bash "$root/scripts/envs/build.sh" cpu "${COOOL_VLLM_VENV:-$root/envs/cpu}"
