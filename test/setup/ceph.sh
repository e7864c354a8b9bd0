#!/usr/bin/env bash
# Starts a throwaway one-monitor, one-OSD Ceph cluster with a RADOS gateway (S3) on
# 127.0.0.1, for tests only. Bookworm's Ceph 16 has no standalone (dbstore) RGW, so a
# real (tiny) cluster is the only real S3 server apt offers.
#
# usage: ceph.sh DIR RGW_PORT MON_PORT ACCESS_KEY SECRET_KEY
# Writes DIR/pids (one PID per line) so the caller can stop exactly what was started.
set -euo pipefail
dir=$1 rgw_port=$2 mon_port=$3 access_key=$4 secret_key=$5
mkdir -p "$dir"/{run,log,mon,osd/ceph-0}
conf=$dir/ceph.conf
fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
keyring = $dir/\$name.keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 21474836480
bluestore fsck on mount = false
osd max object name len = 256
osd max object namespace len = 64
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
rgw thread pool size = 64
CONF
c() { "$@" -c "$conf"; }
pids=$dir/pids; : >"$pids"

c ceph-authtool --create-keyring "$dir/mon..keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
c ceph-authtool --create-keyring "$dir/client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
c ceph-authtool "$dir/mon..keyring" --import-keyring "$dir/client.admin.keyring" >/dev/null
cp "$dir/mon..keyring" "$dir/mon.a.keyring"
monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
c ceph-mon --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon..keyring"
ceph-mon -c "$conf" -f -i a >"$dir/log/mon.out" 2>&1 & echo $! >>"$pids"

osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
id=$(c timeout 60 ceph osd new "$osd_uuid")
c ceph-osd -i "$id" --mkfs --mkkey --osd-uuid "$osd_uuid" --no-mon-config >"$dir/log/osd-mkfs.out" 2>&1
c ceph auth add "osd.$id" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -i "$dir/osd.$id.keyring" >/dev/null
ceph-osd -c "$conf" -f -i "$id" >"$dir/log/osd.out" 2>&1 & echo $! >>"$pids"

c ceph auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' -o "$dir/client.rgw.a.keyring" >/dev/null 2>&1
mkdir -p "$dir/rgw"
radosgw -c "$conf" -f -n client.rgw.a >"$dir/log/rgw.out" 2>&1 & echo $! >>"$pids"

deadline=$((SECONDS + 120))
until curl -s -o /dev/null "http://127.0.0.1:$rgw_port/"; do
  if ((SECONDS > deadline)); then echo "radosgw did not answer on 127.0.0.1:$rgw_port within 120 s" >&2; tail -20 "$dir"/log/*.log >&2 || true; exit 1; fi
  sleep 0.3
done
c timeout 60 radosgw-admin -n client.admin user create --uid=pullthrough --display-name=pullthrough \
  --access-key="$access_key" --secret-key="$secret_key" >/dev/null
echo "ceph rgw ready on 127.0.0.1:$rgw_port" >&2
