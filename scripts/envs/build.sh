#!/usr/bin/env bash
# Build one model's vLLM environment from its lock: `build.sh MODEL [DEST]`.
#
#   MODEL  a folder of images/ holding requirements.lock and .python-version
#          (glm45v, gpt-oss, qwen3, or cpu: the CPU build `make test-vllm` uses)
#   DEST   where the venv goes (default: envs/MODEL)
#
# uv makes the venv with the lock's Python and installs the lock exactly
# (`uv pip sync`: what the lock lists is all there is). An optional
# images/MODEL/post-install.sh then runs with the venv's path. The venv is
# separate from the project's .venv: vLLM pins its own torch, transformers,
# openai, pydantic...
#
# Idempotent: when the venv's stamp holds the hash of the lock, this script
# and the post-install step, and vLLM imports, nothing is done; otherwise the
# venv is rebuilt from scratch (uv's cache makes a rebuild quick).
#
# Environment:
#   UV          the uv to use (default: uv on PATH, else the project's .venv/bin/uv)
#   ENV_PYTHON  the interpreter for the venv (default: the version in
#               images/MODEL/.python-version; uv finds it or fetches it)
#   FIND_LINKS  a folder of extra wheels (default: /opt/wheels when it exists,
#               where this kind of machine keeps torch's CPU build)
#   FORCE=1     rebuild even when up to date
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
model=${1:?usage: build.sh MODEL [DEST]}
spec=$root/images/$model
dest=${2:-$root/envs/$model}
lock=$spec/requirements.lock
post=$spec/post-install.sh

if [[ ! -f "$lock" || ! -f "$spec/.python-version" ]]; then
    echo "build.sh: no environment '$model': images/$model needs requirements.lock and .python-version" >&2
    exit 2
fi

uv=${UV:-}
if [[ -z "$uv" ]]; then
    if command -v uv >/dev/null; then uv=uv; else uv=$root/.venv/bin/uv; fi
fi
if ! "$uv" --version >/dev/null 2>&1; then
    echo "build.sh: uv not found (pip install uv, or make setup: it is a dev dependency)" >&2
    exit 2
fi

python=${ENV_PYTHON:-$(tr -d '[:space:]' <"$spec/.python-version")}
find_links=${FIND_LINKS:-}
if [[ -z "$find_links" && -d /opt/wheels ]]; then
    find_links=/opt/wheels
fi
stamp=$dest/.coool-env-stamp
want=$(cat "$lock" "$here/build.sh" $([[ -f "$post" ]] && echo "$post") | sha256sum | cut -d' ' -f1)

healthy() {
    [[ -x "$dest/bin/vllm" ]] && "$dest/bin/python" -c 'import vllm' >/dev/null 2>&1
}

if [[ "${FORCE:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && healthy; then
    echo "env $model up to date: $dest"
    exit 0
fi

started=$(date +%s)
echo "building env $model at $dest (python $python, from ${lock#"$root"/})"
rm -rf "$dest"
"$uv" venv --quiet --seed --python "$python" "$dest"
sync_args=(--python "$dest/bin/python")
if [[ -n "$find_links" ]]; then
    sync_args+=(--find-links "$find_links")
fi
"$uv" pip sync "${sync_args[@]}" "$lock"
if [[ -f "$post" ]]; then
    bash "$post" "$dest"
fi

if ! healthy; then
    echo "build.sh: the new env $dest fails its check (bin/vllm and import vllm):" >&2
    "$dest/bin/python" -c 'import vllm' >&2 || true
    exit 1
fi
echo "$want" >"$stamp"
echo "env $model ready in $(($(date +%s) - started)) s: $dest"
