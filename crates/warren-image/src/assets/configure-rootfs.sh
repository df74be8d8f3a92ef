#!/bin/sh
# Runs inside the freshly debootstrapped tree (chroot) once per root filesystem layer.
set -eu
useradd --create-home --uid 1000 --user-group --shell /bin/bash user
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/warren-user
chmod 0440 /etc/sudoers.d/warren-user
printf 'warren\n' > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 warren\n::1 localhost ip6-localhost ip6-loopback\n' \
    > /etc/hosts
# A sandbox is disposable: let `pip install` work without a virtualenv, as users expect.
rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
apt-get clean
rm -rf /var/lib/apt/lists/*
