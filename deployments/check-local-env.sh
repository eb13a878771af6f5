#!/bin/sh
# Build step of the coool-process (-local) deployments (prefect.yaml). Their
# runs load the settings file named by COOOL_LOCAL_SETTINGS_FILE at `prefect
# deploy` time (the settings_file parameter), so a worker needs nothing
# exported; `make deploy` sets it. Refuse a missing, relative or absent file
# (the run would otherwise wait on model servers it can't find). On success
# print this checkout's path only: the pull step runs the flows from it.
set -u

value="${COOOL_LOCAL_SETTINGS_FILE:-}"
fail() {
    echo "prefect.yaml (-local deployments): $*" >&2
    echo "  register them with: make deploy DEPLOY='*-local' [SETTINGS=deployments/settings/gpu-single-node.yaml]" >&2
    exit 1
}
case "$value" in
    "") fail "COOOL_LOCAL_SETTINGS_FILE is not set" ;;
    /*) ;;
    *) fail "COOOL_LOCAL_SETTINGS_FILE=$value must be an absolute path (the worker runs elsewhere)" ;;
esac
[ -f "$value" ] || fail "COOOL_LOCAL_SETTINGS_FILE=$value: no such file"
pwd
