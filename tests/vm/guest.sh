#!/bin/sh
# PID 1 of the cgroup-v2 guest, after tests/vm/init's switch_root: the root is
# the host's / (read-only 9p) under a tmpfs overlay. Mount what a booted Debian
# has (cgroup2 alone on /sys/fs/cgroup), run pytest in the checkout, leave its
# output and exit code in /lane-out (the host's temp dir), power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
out=/lane-out
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
# PID 1 must not exit while the power goes: sleep itself can fail as the root is torn down
off() { sync; echo o > /proc/sysrq-trigger; while :; do sleep 1 2>/dev/null || :; done; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,gid=5,mode=620 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
# podrt's dirs (the tests' temp dirs) hold overlay upper dirs: not on the overlay root, so
# on a tmpfs of their own (TMPDIR, not over /tmp, where the checkout itself may live)
mkdir -p /lane-tmp && mount -t tmpfs -o mode=1777 tmpfs /lane-tmp
export TMPDIR=/lane-tmp
mount -t tmpfs -o mode=755 tmpfs /run
hostname podrt-v2-guest
ip link set lo up
# modules on demand (bridge, veth, nf_tables for the CNI plugins): the unpacked
# kernel package, with the modules.dep that tests/vm/lane.py fetch made
mkdir -p /lib/modules && rm -rf "/lib/modules/$(uname -r)" && ln -s "$(arg podrt.modules)" "/lib/modules/$(uname -r)"
echo /sbin/modprobe > /proc/sys/kernel/modprobe
modprobe fuse  # /dev/fuse, as udev's static nodes give a booted Debian (a device test uses it)

echo "lane: $(uname -r), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers), up $(cut -d' ' -f1 /proc/uptime) s"
repo=$(arg podrt.repo)
cd "$repo" || { echo 1 > $out/rc; off; }
set -a
. $out/env
set +a
set --
while IFS= read -r a; do [ -n "$a" ] && set -- "$@" "$a"; done < $out/pytest.args
if [ -f $out/command ]; then
    { sh -c "$(cat $out/command)"; echo $? > $out/rc.pending; } 2>&1 | tee $out/output.log
else
    { .venv/bin/python -m pytest "$@"; echo $? > $out/rc.pending; } 2>&1 | tee $out/output.log
fi
mv $out/rc.pending $out/rc
echo "lane: done after $(cut -d' ' -f1 /proc/uptime) s"
off
