#!/bin/sh
# /sbin/warren-init: PID 1 of a Warren guest until it execs tini. It sets up the mounts and the
# network a sandbox user expects, then starts the agent under tini, which reaps orphaned
# processes. If the agent exits, tini exits, the kernel panics and the VM stops (panic=-1 with
# QEMU's -no-reboot), so the host sees one clear event.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

mountpoint -q /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
mountpoint -q /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx 2>/dev/null
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr

cat /etc/hostname > /proc/sys/kernel/hostname

# QEMU user-mode networking (slirp) has fixed addresses: guest 10.0.2.15, gateway 10.0.2.2,
# DNS 10.0.2.3 (written to /etc/resolv.conf when the image is built). No DHCP client needed.
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2

echo "warren-init: starting warren-agent"
exec tini -s -g -- /usr/local/bin/warren-agent
