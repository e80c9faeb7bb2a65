#!/usr/bin/env bash
# Runs every fuzz target of tests/fuzz for SECONDS each (default 30) and
# prints how many inputs each ran. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); `.ci/run` installs cargo-fuzz.
#
#   bash tests/fuzz/run.sh 300      # five minutes per target
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-30}"
targets=(request_checks token_verify identity_metadata page_token)
cargo +nightly fuzz build --fuzz-dir tests/fuzz -O
total=0
for target in "${targets[@]}"; do
  corpus="tests/fuzz/corpus/$target"
  mkdir -p "$corpus"
  log=$(mktemp)
  if ! cargo +nightly fuzz run --fuzz-dir tests/fuzz -O "$target" "$corpus" -- \
      -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed (its input is in tests/fuzz/artifacts/$target)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
  echo "$target: ${runs:-?} inputs in ${seconds}s, no crash"
  total=$((total + ${runs:-0}))
  rm -f "$log"
done
echo "fuzzing: $total inputs over ${#targets[@]} targets"
