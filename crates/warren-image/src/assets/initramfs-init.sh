#!/bin/busybox sh
# shellcheck shell=dash
# /init of Warren's initramfs: load the virtio drivers (modules in Debian's cloud kernel), mount
# the root disk and hand over to /sbin/warren-init on it. Any failure ends this script, which
# panics the kernel; with panic=-1 and QEMU's -no-reboot the VM then exits instead of hanging.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "warren-initramfs: $*"
    exit 1
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# The accelerator probe boots this initramfs only to see that the kernel gets this far.
if grep -qw warren.probe /proc/cmdline; then
    echo "WARREN-PROBE-OK"
    reboot -f
fi

while read -r module; do
    insmod "/lib/modules/$module.ko" || fail "cannot load module $module"
done < /etc/warren-modules

# virtio-blk probes asynchronously; give it up to 5 s.
tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 500 ] && fail "no root disk at /dev/vda"
    sleep 0.01
done

mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount the root disk"
[ -x /newroot/sbin/warren-init ] || fail "the root disk has no /sbin/warren-init"

umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/warren-init
