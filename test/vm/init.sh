#!/bin/sh
# /init (PID 1) of vigil's cgroup v2 test microVM. Mounts the host root
# read-only at /host (9p tag "host"), the writable share (9p tag "out") at
# /host/tmp/out, a cgroup2 hierarchy with memory/cpu/io/pids enabled, then
# runs /tmp/out/run.sh chrooted into the host root and leaves its exit status
# in /tmp/out/rc before powering off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_mmio \
         netfs fscache 9pnet 9pnet_virtio 9p; do      # dependency order (the package has no modules.dep)
  insmod /lib/modules/$m.ko || echo "VM-ERROR insmod $m"
done
O=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $O,ro,cache=loose host /host || echo "VM-ERROR mount host"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t tmpfs tmpfs /host/run
# The tmpfs below hides the host's /tmp; keep a read-only view of it at
# /run/host-tmp so a checkout that lives under /tmp can still be reached.
mkdir -p /hosttmp /host/run/host-tmp
mount -o bind /host/tmp /hosttmp || echo "VM-ERROR bind host tmp"
mount -o bind /hosttmp /host/run/host-tmp || echo "VM-ERROR bind host tmp into run"
mount -t tmpfs tmpfs /host/tmp                        # payloads live in the share
mkdir /host/tmp/out
mount -t 9p -o $O out /host/tmp/out || echo "VM-ERROR mount out"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || echo "VM-ERROR mount cgroup2"
echo "+cpu +io +memory +pids" > /host/sys/fs/cgroup/cgroup.subtree_control || echo "VM-ERROR subtree_control"
ifconfig lo 127.0.0.1 up || echo "VM-ERROR loopback"      # tests serve HTTP on 127.0.0.1
printf '\nVM-START uptime=%s\n' "$(cut -d' ' -f1 /proc/uptime)"
chroot /host /usr/bin/env -i HOME=/tmp/home TERM=dumb \
  PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/sh /tmp/out/run.sh
rc=$?
echo $rc > /host/tmp/out/rc
printf '\nVM-EXIT=%d uptime=%s\n' $rc "$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
