#!/usr/bin/env bash
# The main job, embedded default: a live VM running the memory dirtier, suspended to a file
# while it works, resumed in a new process, and shown still verifying its memory.
set -euo pipefail
BUILD=${1:-build}
VM="$BUILD/godwit-vm"
WORK=$(mktemp -d /tmp/godwit-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
  echo "demo: /dev/kvm is not usable here; Godwit needs KVM to run VMs." >&2
  exit 1
fi

say() { printf '\n== %s\n' "$*"; }

say "start a VM: 1 GiB, 2 vCPUs, dirtier writing 256 MiB at 64 MiB/s (random data)"
"$VM" run --name demo --memory 1G --vcpus 2 --guest dirtier:ws=256M,rate=64M,pattern=random \
  --control "$WORK/demo.sock" --console "$WORK/console.log" > "$WORK/run.out" 2> "$WORK/run.err" &
for _ in $(seq 100); do [ -S "$WORK/demo.sock" ] && break; sleep 0.05; done
sleep 4
"$VM" status --control "$WORK/demo.sock"

say "suspend it to a file while the guest is writing"
"$VM" save --control "$WORK/demo.sock" --file "$WORK/demo.snap" --stop
wait
cat "$WORK/run.out"
printf 'snapshot: %s MiB apparent, %s MiB on disk (zero pages are holes)\n' \
  "$(( $(stat -c %s "$WORK/demo.snap") >> 20 ))" "$(( $(stat -c %b "$WORK/demo.snap") * 512 >> 20 ))"

say "resume it in a new process for 4 seconds"
"$VM" restore --file "$WORK/demo.snap" --seconds 4 2> "$WORK/restore.err"
grep -h "restored" "$WORK/restore.err" || true
echo
echo "demo: the guest kept running across the suspend: no verify errors means every page held what it wrote."
