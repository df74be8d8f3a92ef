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

# qemu-utils is handled apart, after the rest (see below).
packages="qemu-system-x86 debootstrap e2fsprogs lz4 busybox-static cpio ca-certificates"

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

# qemu-img must come from the same QEMU release as qemu-system-x86. A host may carry a newer
# qemu-utils (from backports) that apt removes when it installs Debian's qemu-system-x86, so
# it is installed last, pinned to the version of the installed qemu-system-x86.
qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86)
utils_status=$(dpkg-query -W -f='${Status} ${Version}' qemu-utils 2>/dev/null || true)
if [ "$utils_status" != "install ok installed $qemu_version" ]; then
    echo "installing: qemu-utils=$qemu_version"
    export DEBIAN_FRONTEND=noninteractive
    update_once
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "qemu-utils=$qemu_version" >/dev/null
fi

# The kernel is fetched with `apt-get download`, which needs package lists.
if ! apt-cache show --no-all-versions linux-image-cloud-amd64 >/dev/null 2>&1; then
    update_once
fi
