#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build briefly (the suite's fuzz smoke test), as many
# at once as there are cores: each target is one single-threaded process, so on a 2-core
# machine this halves the test's wall time without shortening any target's run.
# Usage: run_fuzzers.sh FUZZ_BUILD_DIR SOURCE_DIR [SECONDS]. Exits 77 (skipped) when the
# fuzz build is missing, e.g. without clang; a crash fails the test.
set -u
dir=${1:-}; src=${2:-}; secs=${3:-8}
if [ -z "$dir" ] || ! ls "$dir"/fuzz/fuzz_* >/dev/null 2>&1; then
  echo "SKIP: no fuzz build at '$dir' (make fuzz builds it with clang)"; exit 77
fi
jobs=$(nproc 2>/dev/null || echo 1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One target: its verdict goes to $out/NAME.verdict, its log to $out/NAME.log.
run_one() {
  local f=$1 name corpus seeds=()
  name=$(basename "$f")
  corpus="$out/$name.corpus"; mkdir -p "$corpus"
  case "$name" in
    fuzz_wire_decoder) seeds=("$src/tests/fuzz/corpus/wire") ;;
    fuzz_backup_sched) seeds=("$src/tests/fuzz/corpus/backup_sched") ;;
  esac
  if "$f" -max_total_time="$secs" -max_len=20000 "$corpus" "${seeds[@]}" > "$out/$name.log" 2>&1; then
    echo "ok   $name: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$out/$name.log" | tail -1)" \
      > "$out/$name.verdict"
  else
    { echo "FAIL $name"; tail -n 40 "$out/$name.log"; } > "$out/$name.verdict"
  fi
  rm -rf "$corpus"
}

running=0
for f in "$dir"/fuzz/fuzz_*; do
  [ -x "$f" ] && [ -f "$f" ] || continue
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  run_one "$f" &
  running=$((running + 1))
done
wait

rc=0
for f in "$dir"/fuzz/fuzz_*; do
  [ -x "$f" ] && [ -f "$f" ] || continue
  v="$out/$(basename "$f").verdict"
  if [ -f "$v" ]; then cat "$v"; else echo "FAIL $(basename "$f"): no verdict"; rc=1; fi
  grep -q '^FAIL' "$v" 2>/dev/null && rc=1
done
exit $rc
