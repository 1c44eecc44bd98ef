#!/usr/bin/env bash
# Installs the real components the integration tests start (each test starts
# and stops its own instances on 127.0.0.1). Skips what is already there.
# See ../shared/TESTING.md for how each one is installed on these machines.
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=()
command -v etcd >/dev/null 2>&1 || apt_packages+=(etcd-server etcd-client)

if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "install-deps: installing ${apt_packages[*]} from Debian"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

etcd --version | head -1
