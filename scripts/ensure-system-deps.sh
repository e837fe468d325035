#!/usr/bin/env bash
# systemd-python compiles against libsystemd; pip cannot provide it, so the OS must.
set -euo pipefail
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists libsystemd 2>/dev/null; then need+=(libsystemd-dev); fi
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "missing system packages: ${need[*]}" >&2
    echo "run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
