#!/usr/bin/env bash
# Install podrt and what it runs on (Debian 12, as root), then start the daemon
# on its built-in defaults (socket /run/podrt/podrt.sock).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PODRT_PREFIX:-/opt/podrt}

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq runc crun conmon containernetworking-plugins catatonit \
    iproute2 iptables util-linux criu python3 python3-venv >/dev/null
# criu: CheckpointContainer (runc checkpoint); `podrt check` says whether it works on this kernel

python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --upgrade pip
"$prefix/venv/bin/pip" install -q "$here"
ln -sf "$prefix/venv/bin/podrt" /usr/local/bin/podrt

# A node with no CNI network gets podrt's default bridge network (never over an existing config).
podrt install-network
podrt check || echo "podrt check found problems (above); the daemon starts anyway"

if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    install -m 0644 "$here/scripts/podrt.service" /etc/systemd/system/podrt.service
    systemctl daemon-reload
    systemctl enable --now podrt.service
else
    # No systemd (containers, CI machines): run detached, log to a file.
    mkdir -p /run/podrt /var/log/podrt
    if [ -f /run/podrt/podrt.pid ] && kill -0 "$(cat /run/podrt/podrt.pid)" 2>/dev/null; then
        echo "podrt already running (pid $(cat /run/podrt/podrt.pid))"
    else
        setsid /usr/local/bin/podrt serve >>/var/log/podrt/podrt.log 2>&1 < /dev/null &
        echo $! > /run/podrt/podrt.pid
    fi
fi
for _ in $(seq 100); do [ -S /run/podrt/podrt.sock ] && break; sleep 0.1; done
[ -S /run/podrt/podrt.sock ] || { echo "podrt did not start; see /var/log/podrt/podrt.log" >&2; exit 1; }
echo "podrt is serving on unix:///run/podrt/podrt.sock"
