#!/usr/bin/env bash
# Runs a command with the real components the tests and the bench need: installs the
# Debian packages when missing, starts Ceph RGW on 127.0.0.1, exports S3_TEST_*, runs
# "$@", and stops exactly what it started (by PID) however the command ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash test/setup/install.sh
work=$(mktemp -d /tmp/pullthrough-components.XXXXXX)
stop() {
  if [[ -f $work/ceph/pids ]]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$work/ceph/pids"
    while read -r pid; do
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    done <"$work/ceph/pids"
  fi
  rm -rf "$work"
}
trap stop EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rgw_port=$(port) mon_port=$(port)
export S3_TEST_ACCESS_KEY_ID=pullthrough-test S3_TEST_SECRET_ACCESS_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
bash test/setup/ceph.sh "$work/ceph" "$rgw_port" "$mon_port" "$S3_TEST_ACCESS_KEY_ID" "$S3_TEST_SECRET_ACCESS_KEY"
export S3_TEST_ENDPOINT=http://127.0.0.1:$rgw_port
"$@"
