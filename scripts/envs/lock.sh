#!/usr/bin/env bash
# Compile images/MODEL/requirements.in into its lock: `lock.sh MODEL [OUT]`.
#
# uv pip compile for linux x86_64 (manylinux 2.28) and the Python in
# images/MODEL/.python-version. A `# exclude-newer: DATE` line in the .in file
# resolves the index as it was that day (the world the vLLM release and its
# image were built in), so a re-lock gives the same pins until the .in
# changes. The existing lock (or OUT, if it exists) is kept as preferences:
# uv changes a pin only when the .in asks for it.
#
# Environment: UV (default: uv on PATH, else .venv/bin/uv); FIND_LINKS
# (default: /opt/wheels when it exists, for torch's CPU build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
model=${1:?usage: lock.sh MODEL [OUT]}
spec=images/$model
out=${2:-$spec/requirements.lock}
cd "$root"

uv=${UV:-}
if [[ -z "$uv" ]]; then
    if command -v uv >/dev/null; then uv=uv; else uv=$root/.venv/bin/uv; fi
fi
python=$(tr -d '[:space:]' <"$spec/.python-version")
args=(--python-version "$python" --python-platform x86_64-manylinux_2_28
      --custom-compile-command "make lock-$model" --quiet)
exclude_newer=$(sed -n 's/^# exclude-newer: *\([0-9TZ:-]*\).*/\1/p' "$spec/requirements.in" | head -1)
if [[ -n "$exclude_newer" ]]; then
    args+=(--exclude-newer "$exclude_newer")
fi
find_links=${FIND_LINKS:-}
if [[ -z "$find_links" && -d /opt/wheels ]]; then
    find_links=/opt/wheels
fi
if [[ -n "$find_links" ]]; then
    args+=(--find-links "$find_links")
fi
# Packages the env must not have (listed in the .in as `# no-emit: NAME`).
for name in $(sed -n 's/^# no-emit: *\([A-Za-z0-9._-]*\).*/\1/p' "$spec/requirements.in"); do
    args+=(--no-emit-package "$name")
done
if [[ "$out" != "$spec/requirements.lock" && ! -f "$out" && -f "$spec/requirements.lock" ]]; then
    cp "$spec/requirements.lock" "$out"
fi
"$uv" pip compile "${args[@]}" "$spec/requirements.in" -o "$out"
