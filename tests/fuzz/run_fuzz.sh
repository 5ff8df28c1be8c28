#!/usr/bin/env bash
# run_fuzz.sh <fuzzer> <seed dir> <work dir> <dict> <seconds> [<regression dir>] — runs one
# libFuzzer target for a bounded time, starting from the seeds and the committed reproducers of
# past findings (tests/fuzz/regressions/<target>/, run first); any crash, leak, UB report,
# timeout or OOM is a failure (libFuzzer exits non-zero, the reproducer is in <work dir>/artifacts/).
set -uo pipefail
F=$1; SEEDS=$2; W=$3; DICT=$4; SECS=$5; REGR=${6:-}
rm -rf "$W/corpus"
mkdir -p "$W/corpus" "$W/artifacts"
"$F" -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -max_len=4096 -print_final_stats=1 \
     -dict="$DICT" -artifact_prefix="$W/artifacts/" "$W/corpus" "$SEEDS" $REGR > "$W/log.txt" 2>&1
rc=$?
grep -E "^Done|stat::number_of_executed_units|stat::peak_rss|INFO: seed corpus|corp: " "$W/log.txt" | tail -n 5
if [ $rc -ne 0 ]; then
  echo "FAIL: $F exited with $rc; reproducers: $(ls "$W/artifacts")"
  grep -E "ERROR|runtime error|SUMMARY|==[0-9]+==" "$W/log.txt" | head -n 20
  exit 1
fi
echo "PASS: no crash, leak or UB in ${SECS}s"
