#!/usr/bin/env bash
# expect_failure.sh — runs a command that must FAIL: a non-zero exit status, a message matching
# REGEX in its output, and an end within MAX_S seconds (a hang is the bug these tests catch).
#   expect_failure.sh REGEX MAX_S command args...
set -u
regex=$1; max_s=$2; shift 2
start=$(date +%s%N)
out=$("$@" 2>&1); rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "$out"
echo "expect_failure: exit status $rc after ${ms} ms"
if [ "$rc" -eq 0 ]; then echo "expect_failure: FAIL: the command succeeded"; exit 1; fi
if ! grep -Eq -- "$regex" <<<"$out"; then echo "expect_failure: FAIL: no line matches /$regex/"; exit 1; fi
if [ "$ms" -gt $(( max_s * 1000 )) ]; then echo "expect_failure: FAIL: took more than $max_s s"; exit 1; fi
echo "expect_failure: ok (failed as expected, with the message)"
