#!/usr/bin/env bash
# Installs the real components the tests use, from Debian's packages, when missing.
set -euo pipefail
packages=(docker-registry skopeo podman containerd radosgw ceph-mon ceph-osd zstd jq umoci curl openssl prometheus chromium wrk apache2-utils)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
((${#missing[@]} == 0)) && exit 0
echo "installing test components: ${missing[*]}" >&2
sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
