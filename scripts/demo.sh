#!/usr/bin/env bash
# The main job, embedded default: two "hosts" on loopback (two godwitd daemons with their own
# ports and state directories), a live VM created through the API, a live migration from
# host A to host B with the progress bar, the guest shown running on host B with no verify
# errors, and a suspend-to-file of the VM that a new process resumes.
set -euo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CEPH=""
WORK=$(mktemp -d /tmp/godwit-demo.XXXXXX)
cleanup() {
  [ -n "$CEPH" ] && "$ROOT/scripts/ceph-cluster" stop "$CEPH" 2>/dev/null || true
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pkill -f "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
PIDS=()
trap cleanup EXIT

if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
  echo "demo: /dev/kvm is not usable here; Godwit needs KVM to run VMs." >&2
  exit 1
fi
say() { printf '\n== %s\n' "$*"; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

head -c 24 /dev/urandom | base64 > "$WORK/token"
head -c 32 /dev/urandom | base64 > "$WORK/cluster.secret"
# Each host names the other as its peer: a VM only ever migrates to a configured peer.
declare -A PORT=([a]=$(free_port) [b]=$(free_port) [c]=$(free_port)) OTHER=([a]=b [b]=a [c]=a)
# A third host, and a cluster registry in a directory (docs/cluster.md) for the evacuation.
mkdir -p "$WORK/images"
for h in a b c; do
  mkdir -p "$WORK/$h"
  cat > "$WORK/$h/godwitd.conf" <<CONF
[daemon]
listen = 127.0.0.1:${PORT[$h]}
peers = 127.0.0.1:${PORT[${OTHER[$h]}]}
state_dir = $WORK/$h/state
token_file = $WORK/token
secret_file = $WORK/cluster.secret
migration_host = 127.0.0.1
migration_port = $(free_port)
hostname = host-$h
cluster = dir:$WORK/cluster
capacity_memory = 4G
image_roots = $WORK/images
CONF
  "$BIN/godwitd" --config "$WORK/$h/godwitd.conf" > "$WORK/$h/godwitd.out" 2> "$WORK/$h/godwitd.log" &
  PIDS+=($!)
done
addr() { sed -n 's/^listen = //p' "$WORK/$1/godwitd.conf"; }
for h in a b c; do
  for _ in $(seq 200); do grep -q "listening on" "$WORK/$h/godwitd.out" 2>/dev/null && break; sleep 0.05; done
done
A=$(addr a); B=$(addr b)
export GODWIT_TOKEN_FILE="$WORK/token"
gw() { "$BIN/godwit" "$@"; }

say "two hosts on loopback: host A's godwitd at $A, host B's at $B"
gw --addr "$A" host
gw --addr "$B" host

say "host A: create and start a VM (1 GiB, 2 vCPUs) whose guest writes 256 MiB of random data at 64 MiB/s and verifies every page"
gw --addr "$A" vm create demo --memory 1G --vcpus 2 --guest dirtier:ws=256M,rate=64M,pattern=random --start
sleep 4
gw --addr "$A" vm show demo

say "live-migrate it from host A to host B (pre-copy, 50 ms downtime limit) with the progress bar"
gw --addr "$A" migrate demo --to "$B" --downtime-ms 50 --wait
gw --addr "$A" job list

say "host B: the guest runs on, still verifying its memory"
sleep 2
gw --addr "$B" vm show demo
gw --addr "$B" vm list

SOCK=$(ls "$WORK"/b/state/vms/demo/*.sock 2>/dev/null | head -1)
say "host B: back the running VM up to a throw-away Ceph cluster and to the local store; the guest pauses for under a millisecond, and the second backup sends only what changed"
CEPH=$("$ROOT/scripts/ceph-cluster" start | tail -1)
STORE=(--store rados:godwit/demo --ceph-conf "$CEPH")
"$BIN/godwit-vm" backup --control "$SOCK" "${STORE[@]}"
"$BIN/godwit-vm" backup --control "$SOCK" "${STORE[@]}"
"$BIN/godwit-vm" backup --control "$SOCK" --store "dir:$WORK/backups"
"$BIN/godwit-vm" list-backups "${STORE[@]}" --vm demo
"$BIN/godwit-vm" verify-backup "${STORE[@]}" --vm demo

say "restore the newest Ceph backup as a clone, demo-clone: it runs on from the backup's point in time"
"$BIN/godwit-vm" restore-backup "${STORE[@]}" --vm demo --name demo-clone --seconds 3 2> "$WORK/clone.err"

say "host B: suspend the VM to a file while it works, and resume it in a new process"
"$BIN/godwit-vm" save --control "$SOCK" --file "$WORK/demo.snap"
gw --addr "$B" vm stop demo > /dev/null
"$BIN/godwit-vm" restore --file "$WORK/demo.snap" --seconds 3 2> "$WORK/restore.err"

say "the cluster: three hosts in one registry, each with its state, room and heartbeat"
C=$(addr c)
for n in web-1 web-2 db-1; do
  gw --addr "$A" vm create "$n" --memory 192M --guest dirtier:ws=32M,rate=16M --start > /dev/null
done
sleep 1.5
gw --addr "$A" cluster hosts

say "host A goes into maintenance: first the plan (order, destinations, estimates), then the evacuation"
gw --addr "$A" host maintenance enter --dry-run
gw --addr "$A" host maintenance enter --wait --max-outbound 2
gw --addr "$A" cluster hosts

say "maintenance over: host A is active again and its VMs come home"
gw --addr "$A" host maintenance exit --return
for _ in $(seq 100); do [ "$(gw --addr "$A" vm list 2>/dev/null | grep -c running)" -ge 3 ] && break; sleep 0.2; done
gw --addr "$A" vm list
# A stock Debian kernel (downloaded by the tests into the build tree, or now; never committed).
KERNEL=$("$ROOT/tests/lib/debian_kernel.sh" "$BIN/kernel-cache" 2>/dev/null || true)
if [ -n "$KERNEL" ]; then
  say "host C: a Linux guest through the API: a stock Debian kernel from the host's image_roots, our command line"
  cp "$KERNEL" "$WORK/images/vmlinuz"
  gw --addr "$C" vm create penguin --memory 256M --kernel "$WORK/images/vmlinuz" \
     --cmdline "console=ttyS0 earlyprintk=ttyS0 panic=-1" --start
  echo "(a kernel outside image_roots, or a link, is refused with its reason:)"
  gw --addr "$C" vm create intruder --kernel "$KERNEL" 2>&1 || true
  echo "(on these PVM machines the kernel needs 30-60 s to print its banner and stops after its e820 map,"
  echo " so the demo does not wait for it: 'make test' does (daemon_linux_vm); on hardware KVM it boots on.)"
  gw --addr "$C" vm delete penguin --force > /dev/null
else
  say "Linux guest skipped: no Debian kernel (the mirror is unreachable; tests/lib/debian_kernel.sh)"
fi
echo
echo "demo: the guest moved between hosts, was backed up live to Ceph and cloned, and crossed a suspend"
echo "      without a single verify error; host A was drained into maintenance and its VMs came back."
