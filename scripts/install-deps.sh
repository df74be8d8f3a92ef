#!/bin/sh
# Installs the Debian packages Warren needs on a fresh host (run as root). Idempotent: it only
# calls apt when something is missing, and then runs `apt-get update` once.
#   qemu-system-x86, qemu-utils  QEMU microvm and qemu-img (runtime, overlays, disk builds)
#   debootstrap                  guest root filesystem
#   e2fsprogs                    mkfs.ext4 -d
#   lz4                          decompressing the kernel's bzImage payload
#   busybox-static               the initramfs
#   cpio                         inspecting initramfs archives (Warren writes them itself)
#   dpkg-dev is not needed: `apt-get download` and `dpkg-deb` come with apt and dpkg.
set -eu

packages="qemu-system-x86 qemu-utils debootstrap e2fsprogs lz4 busybox-static cpio ca-certificates"

updated=""
update_once() {
    if [ -z "$updated" ]; then
        apt-get update -qq
        updated=1
    fi
}

missing=""
for pkg in $packages; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -n "$missing" ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    update_once
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The kernel is fetched with `apt-get download`, which needs package lists.
if ! apt-cache show --no-all-versions linux-image-cloud-amd64 >/dev/null 2>&1; then
    update_once
fi
