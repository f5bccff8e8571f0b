#!/usr/bin/env bash
# Runs the fuzz targets: seeds the corpora (seed.sh), builds every target
# once, then runs each for SECONDS (default 30), JOBS at a time (default
# 2), with a timeout per input and memory limits. Exits non-zero when a
# target found a crash, a hang or an allocation past the limit; what it
# found is in fuzz/artifacts/<target>/, its log in fuzz/logs/<target>.log.
#
#   fuzz/run.sh                 every target, 30 s each
#   fuzz/run.sh 3600 config dns an hour each for two targets
#   JOBS=1 fuzz/run.sh 600      one at a time
#
# FUZZ_CORPUS=DIR grows the corpora in DIR instead of fuzz/corpus (a fresh
# DIR starts from the seeds alone, as in CI); FUZZ_SEED=N makes libFuzzer's
# choices repeat from run to run (CI's run is seed 1 on the seeds alone,
# which docs/fuzzing.md says was run far longer here first).
# FUZZ_SANITIZER=none builds without AddressSanitizer (default: address),
# in about two thirds of the time; overflow checks and debug assertions
# stay on either way. FUZZ_TARGET_DIR: where to build (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")"
export FUZZ_CORPUS=${FUZZ_CORPUS:-corpus}
corpus=$FUZZ_CORPUS
seed_flag=()
[ -z "${FUZZ_SEED:-}" ] || seed_flag=("-seed=$FUZZ_SEED")
seconds=${1:-30}
shift || true
jobs=${JOBS:-2}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^ductd-fuzz$')
fi

./seed.sh
# Overflow checks and debug assertions on (cargo-fuzz's default), so
# that an arithmetic overflow is a crash.
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${FUZZ_TARGET_DIR:-target}
cargo +nightly fuzz build -s "$sanitizer" --target-dir "$target_dir" 2>&1 |
  grep -v "^ *\(Compiling\|Finished\)" || true
bin=$target_dir/x86_64-unknown-linux-gnu/release
mkdir -p artifacts logs

# One target: its corpus grows in corpus/<target>; the libFuzzer flags
# make a hang (10 s on one input), an RSS over 512 MB or a single
# allocation over 256 MB a failure like a crash.
run() {
  local t=$1
  mkdir -p "artifacts/$t" "$corpus/$t"
  local rc=0
  nice -n "${NICE:-0}" "$bin/$t" "$corpus/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb=256 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 "${seed_flag[@]}" >"logs/$t.log" 2>&1 || rc=$?
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log")
  if [ "$rc" -eq 0 ]; then
    echo "fuzz $t: ${runs:-?} executions in ${seconds} s, nothing found"
  else
    echo "fuzz $t: FAILED (exit $rc) after ${runs:-?} executions; see fuzz/logs/$t.log and fuzz/artifacts/$t/"
    tail -n 40 "logs/$t.log"
  fi
  echo "$rc" >"logs/$t.rc"
}

for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run "$t" &
done
wait

failed=0
for t in "${targets[@]}"; do
  [ "$(cat "logs/$t.rc")" = 0 ] || failed=1
done
exit "$failed"
