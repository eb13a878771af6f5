#!/bin/sh
# Start vLLM for one Qwen3 role: `coool-qwen3-serve [describer|ensembler] [vLLM flags...]`.
# Without a role argument, COOOL_QWEN3_ROLE names it (coool's docker backend
# sets it through the role's server.env and passes only --port and
# --allowed-local-media-path). The launch flags live in the Dockerfile's ENV.
set -eu

role="${COOOL_QWEN3_ROLE:-}"
case "${1:-}" in
    describer | ensembler)
        role="$1"
        shift
        ;;
esac

case "$role" in
    describer) launch="${COOOL_QWEN3_DESCRIBER:?COOOL_QWEN3_DESCRIBER is not set}" ;;
    ensembler) launch="${COOOL_QWEN3_ENSEMBLER:?COOOL_QWEN3_ENSEMBLER is not set}" ;;
    *)
        echo "coool-qwen3-serve: choose a role: first argument or COOOL_QWEN3_ROLE = describer | ensembler (got '${role}')" >&2
        exit 64
        ;;
esac

# Word splitting of the launch strings is intended (model id, then flags);
# globbing is not.
set -f
# shellcheck disable=SC2086
exec vllm serve $launch ${COOOL_QWEN3_COMMON:-} "$@"
