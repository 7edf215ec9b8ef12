#!/usr/bin/env bash
# Install everything the test suite needs (Debian 12, as root): the real host
# parts the integration tests run, and a venv at .venv with podrt, test and lint tools.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq runc crun conmon containernetworking-plugins catatonit \
    iproute2 iptables util-linux iputils-ping python3 python3-venv \
    docker-registry apache2-utils busybox-static criu >/dev/null
# criu: CheckpointContainer's dumps (runc checkpoint); docker-registry: the tests' loopback registry (not started as a service here;
# the fixtures run their own); apache2-utils: htpasswd for its basic auth;
# busybox-static: the test image containers run from.
apt-get install -y -qq --no-install-recommends qemu-system-x86 kmod >/dev/null
# qemu-system-x86 and kmod: the cgroup-v2 lane (tests/vm/) boots Debian's kernel in
# QEMU; kmod's depmod indexes its modules for the guest's modprobe.

python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q --upgrade pip
"$here/.venv/bin/pip" install -q -e "$here[test,lint]"  # lint: ruff and mypy, which .ci/run runs first
# The lane's kernel: Debian's linux-image-amd64 package, unpacked into /var/cache/podrt-vm.
"$here/.venv/bin/python" "$here/tests/vm/lane.py" fetch >/dev/null
