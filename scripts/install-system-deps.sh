#!/usr/bin/env bash
# Debian packages novaops needs to build (libvirt-python) and test (etcd, iproute2).
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

PACKAGES=(etcd-server etcd-client libvirt-dev pkg-config gcc python3-dev python3-venv iproute2 qemu-utils util-linux procps)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "install-system-deps: need root to install: ${missing[*]}" >&2; exit 2
    fi
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
