#!/usr/bin/env bash
# run_resume.sh — resume after kill -9 must be bit-identical to never stopping.
#   run_resume.sh <resume_trainer> <workdir> [--expect-mismatch]
# (a) an uninterrupted run of N steps; (b) a second run killed with SIGKILL after a few
# checkpoints, (c) resumed and killed again several times at random moments (some inside a
# checkpoint write), then resumed to N;
# (d) the final weights and the final checkpoints of both runs must be equal byte for byte.
# --expect-mismatch resumes with --break-resume (the dropout RNG is not restored) and passes only
# if the comparison catches the difference: the check itself is checked.
set -euo pipefail
T=$1
W=$2
MODE=${3:-}
N=40
BREAK=""
[ "$MODE" = "--expect-mismatch" ] && BREAK="--break-resume"
rm -rf "$W"
mkdir -p "$W/a" "$W/b"

latest_step() {  # newest checkpoint step in $1, or -1
  local f
  f=$(ls "$1" 2>/dev/null | grep -E '^ckpt-[0-9]+\.safetensors$' | sort | tail -n 1 || true)
  if [ -z "$f" ]; then echo -1; else f=${f#ckpt-}; echo $((10#${f%.safetensors})); fi
}
wait_for_step() {  # wait until pid $1 has checkpointed step >= $2 (fail if it exits first)
  for _ in $(seq 1 3000); do
    [ "$(latest_step "$W/b")" -ge "$2" ] && return 0
    kill -0 "$1" 2>/dev/null || { echo "FAIL: trainer exited before step $2"; exit 1; }
    sleep 0.02
  done
  echo "FAIL: timeout waiting for step $2"; exit 1
}

echo "== (a) uninterrupted: $N steps"
"$T" --dir "$W/a" --steps $N --out "$W/a/final.safetensors" > "$W/a.log"

echo "== (b) interrupted: kill -9 after step 8"
"$T" --dir "$W/b" --steps $N --sleep-ms 40 > "$W/b1.log" &
pid=$!
wait_for_step $pid 8
kill -9 $pid
wait $pid 2>/dev/null && { echo "FAIL: the trainer was not killed"; exit 1; }
s1=$(latest_step "$W/b")
echo "   killed; newest checkpoint: step $s1"
[ "$s1" -lt $N ] && [ ! -e "$W/b/final.safetensors" ] || { echo "FAIL: the run was not interrupted mid-training"; exit 1; }

echo "== (c) resume, then kill -9 again at random moments (fsync dominates a step, so some land mid-write)"
midwrite=0
for round in 1 2 3 4 5 6; do
  "$T" --dir "$W/b" --steps $N --sleep-ms 1 --resume $BREAK >> "$W/b2.log" &
  pid=$!
  sleep "0.0$((RANDOM % 10))$((RANDOM % 10))"
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  t=$(ls "$W/b" | grep -c '\.tmp\.' || true)
  midwrite=$((midwrite + t))
  echo "   round $round: newest checkpoint step $(latest_step "$W/b"), temp files of killed writes: $t"
  [ "$(latest_step "$W/b")" -ge $((N - 4)) ] && break
done
echo "   kills that landed inside a checkpoint write (at least): $midwrite"
echo "== resume to the end"
"$T" --dir "$W/b" --steps $N --resume $BREAK --out "$W/b/final.safetensors" > "$W/b3.log"
head -n 1 "$W/b3.log"

echo "== (d) compare"
fa=$(printf '%s/a/ckpt-%010d.safetensors' "$W" $N)
fb=$(printf '%s/b/ckpt-%010d.safetensors' "$W" $N)
same=1
cmp -s "$W/a/final.safetensors" "$W/b/final.safetensors" || same=0
cmp -s "$fa" "$fb" || same=0
sha256sum "$W/a/final.safetensors" "$W/b/final.safetensors" | sed 's/^/   /'
if [ "$MODE" = "--expect-mismatch" ]; then
  [ $same = 0 ] && { echo "PASS: the broken resume was detected"; exit 0; }
  echo "FAIL: a resume that forgot the dropout RNG still compared equal: the check is blind"; exit 1
fi
[ $same = 1 ] && { echo "PASS: final weights and final checkpoint are bit-identical"; exit 0; }
echo "FAIL: the resumed run differs from the uninterrupted one"
exit 1
