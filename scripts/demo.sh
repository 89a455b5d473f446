#!/usr/bin/env bash
# The main job, embedded default: two "hosts" on loopback, a live VM whose guest keeps writing
# and verifying its memory, a live migration from host A to host B, and a suspend-to-file of
# the VM on host B that a new process resumes.
set -euo pipefail
BUILD=${1:-build}
VM="$BUILD/godwit-vm"
WORK=$(mktemp -d /tmp/godwit-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
  echo "demo: /dev/kvm is not usable here; Godwit needs KVM to run VMs." >&2
  exit 1
fi
say() { printf '\n== %s\n' "$*"; }
wait_sock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }
head -c 32 /dev/urandom | base64 > "$WORK/cluster.secret"

say "host A: start a VM (1 GiB, 2 vCPUs) whose guest writes 256 MiB of random data at 64 MiB/s and verifies every page"
"$VM" run --name demo --memory 1G --vcpus 2 --guest dirtier:ws=256M,rate=64M,pattern=random \
  --control "$WORK/a.sock" --secret-file "$WORK/cluster.secret" --console "$WORK/a.console" \
  > "$WORK/a.out" 2> "$WORK/a.err" &
A_PID=$!
wait_sock "$WORK/a.sock"
until "$VM" status --control "$WORK/a.sock" --json | grep -q '"guest_ready":true'; do sleep 0.2; done
sleep 1
"$VM" status --control "$WORK/a.sock"

say "host B: wait for an incoming migration (authenticated with the cluster secret)"
"$VM" incoming --listen tcp:127.0.0.1:0 --secret-file "$WORK/cluster.secret" --control "$WORK/b.sock" \
  --console "$WORK/b.console" > "$WORK/b.out" 2> "$WORK/b.err" &
B_PID=$!
until grep -q listening "$WORK/b.out" 2>/dev/null; do sleep 0.05; done
URL=$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$WORK/b.out" | head -1)
echo "host B listens on $URL"

say "live-migrate the running VM from host A to host B (pre-copy, 2 streams, 50 ms downtime limit)"
"$VM" migrate --control "$WORK/a.sock" --to "$URL" --streams 2 --downtime-ms 50 --wait --json \
  | tail -1 | tee "$WORK/mig.json"
wait "$A_PID" || true
cat "$WORK/a.out"

say "host B: the guest runs on, still verifying its memory"
wait_sock "$WORK/b.sock"
sleep 2
"$VM" status --control "$WORK/b.sock"

say "host B: suspend the VM to a file while it works, and resume it in a new process"
"$VM" save --control "$WORK/b.sock" --file "$WORK/demo.snap" --stop
wait "$B_PID" || true
"$VM" restore --file "$WORK/demo.snap" --seconds 3 2> "$WORK/restore.err"
echo
echo "demo: the guest moved between hosts and across a suspend without a single verify error."
