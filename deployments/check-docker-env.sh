#!/bin/sh
# Build step of the coool-docker deployments (prefect.yaml): the host paths a
# flow container mounts come from these variables at `prefect deploy` time,
# so refuse to register deployments with missing or relative paths (an unset
# variable would otherwise become an empty string in the volumes).
#   COOOL_DATA_ROOT      folder with videos/ and heatmaps/ (mounted read-only, same path)
#   COOOL_RESULTS_DIR    results folder (mounted read-write, same path)
#   COOOL_SETTINGS_FILE  coool settings YAML (mounted read-only, same path)
set -u

fail() {
    echo "prefect.yaml (coool-docker deployments): $*" >&2
    echo "  e.g. export COOOL_DATA_ROOT=/data/2coool COOOL_RESULTS_DIR=/data/coool-results COOOL_SETTINGS_FILE=\$PWD/deployments/settings/gpu-cluster.yaml" >&2
    exit 1
}

for name in COOOL_DATA_ROOT COOOL_RESULTS_DIR COOOL_SETTINGS_FILE; do
    eval "value=\${$name:-}"
    case "$value" in
        "") fail "$name is not set" ;;
        /) fail "$name=/ would mount the whole host filesystem" ;;
        /*) ;;
        *) fail "$name=$value must be an absolute path (the container mounts it at the same path)" ;;
    esac
done
# The paths are the worker host's; this machine may not see them, so they are
# not checked for existence here.
echo "coool-docker mounts: $COOOL_DATA_ROOT (ro), $COOOL_RESULTS_DIR, $COOOL_SETTINGS_FILE (ro)"
