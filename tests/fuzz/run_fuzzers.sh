#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build briefly (the suite's fuzz smoke test).
# Usage: run_fuzzers.sh FUZZ_BUILD_DIR SOURCE_DIR [SECONDS]. Exits 77 (skipped) when the
# fuzz build is missing, e.g. without clang; a crash fails the test.
set -u
dir=${1:-}; src=${2:-}; secs=${3:-8}
if [ -z "$dir" ] || ! ls "$dir"/fuzz/fuzz_* >/dev/null 2>&1; then
  echo "SKIP: no fuzz build at '$dir' (make fuzz builds it with clang)"; exit 77
fi
rc=0
for f in "$dir"/fuzz/fuzz_*; do
  [ -x "$f" ] && [ -f "$f" ] || continue
  name=$(basename "$f")
  corpus=$(mktemp -d); seeds=()
  case "$name" in
    fuzz_wire_decoder) seeds=("$src/tests/fuzz/corpus/wire") ;;
    fuzz_backup_sched) seeds=("$src/tests/fuzz/corpus/backup_sched") ;;
  esac
  if "$f" -max_total_time="$secs" -max_len=20000 "$corpus" "${seeds[@]}" > "$corpus.log" 2>&1; then
    echo "ok   $name: $(grep -o 'stat::number_of_executed_runs: *[0-9]*\|#[0-9]* *DONE.*' "$corpus.log" | tail -1)"
  else
    echo "FAIL $name"; tail -n 40 "$corpus.log"; rc=1
  fi
  rm -rf "$corpus" "$corpus.log"
done
exit $rc
