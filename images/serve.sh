#!/bin/sh
# Start vLLM for one role of this image:
#   coool-serve [ROLE] [vLLM flags...]
# ROLE (first argument, else COOOL_ROLE) is one of COOOL_ROLES; the launch
# variant is COOOL_LAUNCH: original (default) or plus. The launch strings
# are the Dockerfile's COOOL_<ROLE>_<VARIANT> (weights, then flags), with
# COOOL_<ROLE>_<VARIANT>_ENV as extra environment; they are generated from
# coool/configs/servers.yaml, the definition the venv backend uses too.
# COOOL_WEIGHTS, when set, replaces the weights (a local folder, say).
# Flags given here are appended: a repeated flag wins (coool's docker
# backend passes the served name, port, revision and media path this way).
# The same file is in every vLLM image (tests/test_images.py checks it).
set -eu

roles="${COOOL_ROLES:-}"
# COOOL_QWEN3_ROLE: the name the qwen3 image read before the images shared this script.
role="${COOOL_ROLE:-${COOOL_QWEN3_ROLE:-}}"
for known in $roles; do
    if [ "${1:-}" = "$known" ]; then
        role="$1"
        shift
        break
    fi
done
case " $roles " in
    *" $role "*) ;;
    *) role="" ;;
esac
if [ -z "$role" ]; then
    echo "coool-serve: choose a role: first argument or COOOL_ROLE = $(echo "$roles" | sed 's/ / | /g') (got '${COOOL_ROLE:-}')" >&2
    exit 64
fi

variant="${COOOL_LAUNCH:-original}"
case "$variant" in
    original | plus) ;;
    *)
        echo "coool-serve: COOOL_LAUNCH must be original or plus (got '$variant')" >&2
        exit 64
        ;;
esac

key="COOOL_$(echo "$role" | tr '[:lower:]' '[:upper:]')_$(echo "$variant" | tr '[:lower:]' '[:upper:]')"
# The role and variant were checked against fixed lists: the names are safe to expand.
eval "launch=\${$key:-}"
eval "launch_env=\${${key}_ENV:-}"
if [ -z "$launch" ]; then
    echo "coool-serve: $key is not set" >&2
    exit 64
fi

# Word splitting of the launch strings is intended (weights, then flags);
# globbing is not.
set -f
# shellcheck disable=SC2086
set -- $launch "$@"
if [ -n "${COOOL_WEIGHTS:-}" ]; then
    shift
    set -- "$COOOL_WEIGHTS" "$@"
fi
# shellcheck disable=SC2086
exec env $launch_env vllm serve "$@"
