#!/usr/bin/env bash
# smoke_test.sh — CI checks of tsjt_wmt on the tiny real corpus in testdata/ (each < 2 min):
#   smoke_test.sh BIN TESTDATA WORK CASE
# CASE: tsjt | constjt-indep | single | resume | resume-exact | translate | bad-input
set -euo pipefail
BIN=$1 DATA=$2 WORK=$3 CASE=$4
SMALL=(--data "$DATA" --langs fr --max-train 400 --max-len 64 --test-max-len 0 --test-limit 10 --vocab 400 --warmup 10
       --kl-window 5 --save-every 10 --no-progress)
rm -rf "$WORK/$CASE"
mkdir -p "$WORK/$CASE"
W=$WORK/$CASE
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_error() {  # expect_error "message part" args...
  local want=$1; shift
  set +e
  "$BIN" "$@" > "$W/out.txt" 2>&1
  local rc=$?
  set -e
  [[ $rc -eq 1 ]] || { cat "$W/out.txt"; fail "exit status $rc (want 1) for: $*"; }
  grep -qF -- "$want" "$W/out.txt" || { cat "$W/out.txt"; fail "no '$want' in the error of: $*"; }
  echo "ok: $(tail -n 1 "$W/out.txt")"
}
case $CASE in
  tsjt)
    "$BIN" "${SMALL[@]}" --out "$W" --modes tsjt --max-steps 30 --t-sep auto
    grep -q '"mode": "tsjt"' "$W/results.json" || fail "no tsjt row in results.json"
    [[ -s "$W/tsjt/log.jsonl" ]] || fail "no JSONL log"
    ls "$W"/tsjt/ckpt/ckpt-*.safetensors > /dev/null || fail "no checkpoint"
    for m in moe dense; do [[ -s "$W/tsjt/$m/model.safetensors" && -s "$W/tsjt/$m/spm.model" ]] || fail "no extracted $m"; done
    for f in ce_moe ce_dense kl; do grep -q "<polyline" "$W/$f.svg" || fail "no curve in $f.svg"; done
    grep -q ">TSJT</text>" "$W/kl.svg" || fail "kl.svg has no TSJT curve" ;;  # (30 updates: no switch yet)
  constjt-indep)
    "$BIN" "${SMALL[@]}" --out "$W" --modes constjt --arch indep --max-steps 20
    grep -q '"model": "device"' "$W/results.json" || fail "no device row" ;;
  single)
    "$BIN" "${SMALL[@]}" --out "$W" --modes single --max-steps 20
    grep -q '"switch_step": -1' "$W/results.json" || fail "single must never switch" ;;
  resume)
    "$BIN" "${SMALL[@]}" --out "$W" --modes tsjt --max-steps 20 > "$W/first.txt"
    "$BIN" "${SMALL[@]}" --out "$W" --modes tsjt --max-steps 30 | tee "$W/second.txt"
    grep -q "resumed from .*ckpt-0000000020" "$W/second.txt" || fail "did not resume from step 20"
    grep -q '"step": 30' "$W/tsjt/log.jsonl" || fail "did not continue to step 30"
    expect_error "was written by another configuration" "${SMALL[@]}" --out "$W" --modes tsjt --max-steps 40 --d-model 32 ;;
  resume-exact)
    # a run stopped and resumed equals an uninterrupted one bit for bit: the whole final
    # checkpoint (parameters, Adam state, generators, data position, stage and KL-window state)
    # and every logged number (%.17g) but the wall-clock seconds; also across the stage switch
    # one thread: fast on a loaded machine (bit-exactness holds for any fixed thread count)
    export MOEKD_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    BASE=(--data "$DATA" --langs fr --max-train 400 --max-len 64 --test-max-len 16 --test-limit 3 --vocab 400
          --max-tokens 400 --warmup 4 --no-progress)
    exact() {  # exact NAME STEPS K ARGS...: an uninterrupted run of STEPS updates vs one stopped at K
      local n=$1 t=$2 k=$3; shift 3  # and resumed, and vs one killed after its second-newest
      local ck mode                  # checkpoint (simulated: the newest checkpoint is deleted)
      ck=$(printf 'ckpt-%010d.safetensors' "$t")
      "$BIN" "${BASE[@]}" "$@" --out "$W/$n-full" --max-steps "$t" > "$W/$n-full.txt"
      "$BIN" "${BASE[@]}" "$@" --out "$W/$n-stop" --max-steps "$k" > "$W/$n-stop1.txt"
      "$BIN" "${BASE[@]}" "$@" --out "$W/$n-stop" --max-steps "$t" > "$W/$n-stop2.txt"
      grep -q "resumed from .*$(printf 'ckpt-%010d' "$k")" "$W/$n-stop2.txt" || fail "$n: did not resume from step $k"
      "$BIN" "${BASE[@]}" "$@" --out "$W/$n-kill" --max-steps "$t" > /dev/null
      mode=$(basename "$(dirname "$(ls -d "$W/$n-kill"/*/ckpt)")")
      rm "$W/$n-kill/$mode/ckpt/$ck"
      "$BIN" "${BASE[@]}" "$@" --out "$W/$n-kill" --max-steps "$t" > "$W/$n-kill2.txt"
      grep "resumed from" "$W/$n-kill2.txt" || fail "$n: the killed run did not resume"
      for v in stop kill; do
        cmp "$W/$n-full/$mode/ckpt/$ck" "$W/$n-$v/$mode/ckpt/$ck" || fail "$n: $v + resume: the checkpoint differs"
        diff <(sed 's/, "seconds.*//' "$W/$n-full/$mode/log.jsonl") <(sed 's/, "seconds.*//' "$W/$n-$v/$mode/log.jsonl") \
          || fail "$n: $v + resume: the log differs"
        cmp "$W/$n-full/$mode/hyp.moe.fr-en" "$W/$n-$v/$mode/hyp.moe.fr-en" || fail "$n: $v + resume: translations differ"
      done
      echo "ok: $n ($mode, $t updates) stopped at $k / killed, resumed: checkpoint and $(wc -l < "$W/$n-full/$mode/log.jsonl") log lines identical"
    }
    # TSJT, automatic t_sep: stopped at 13 (stage 1, mid KL window, mid log interval: the log's
    # running means are restored), killed after update 30's checkpoint; the switch must fall
    # between the two, so both sides of it are covered
    exact tsjt 36 13 --modes tsjt --t-sep auto --kl-window 2 --save-every 10 --log-every 3
    sw=$(grep -o "stage 2 from step [0-9]*" "$W/tsjt-full.txt" | grep -o "[0-9]*$" || true)
    [[ -n "$sw" ]] && (( sw > 13 && sw <= 30 )) || fail "switch at '${sw}' is not in (13, 30]: the test would not cross it"
    # indep ConstJT with gradient accumulation (two batches per update)
    exact indep 12 5 --modes constjt --arch indep --update-freq 2 --save-every 4 --log-every 1 ;;
  translate)
    "$BIN" "${SMALL[@]}" --out "$W" --modes tsjt --max-steps 10
    head -n 5 "$DATA/fr-en/test.fr" | "$BIN" translate --model "$W/tsjt/dense" --to en > "$W/hyp.txt"
    [[ $(wc -l < "$W/hyp.txt") -eq 5 ]] || fail "translate did not print 5 lines"
    head -n 5 "$DATA/fr-en/test.en" > "$W/ref.txt"
    # to a file first: `| grep -q` may close the pipe early and, under pipefail, fail the writer
    "$BIN" score "$W/ref.txt" "$W/hyp.txt" > "$W/score.txt"
    grep -q "^BLEU = " "$W/score.txt" || fail "score printed no BLEU line"
    expect_error "no model file" translate --model "$W/nope" --to en ;;
  bad-input)
    mkdir -p "$W/mis/fr-en" "$W/utf/fr-en" "$W/empty/fr-en"
    for s in train valid test; do
      cp "$DATA/fr-en/$s.fr" "$DATA/fr-en/$s.en" "$W/mis/fr-en/"
      cp "$DATA/fr-en/$s.fr" "$DATA/fr-en/$s.en" "$W/utf/fr-en/"
      : > "$W/empty/fr-en/$s.fr"; : > "$W/empty/fr-en/$s.en"
    done
    sed -i '$d' "$W/mis/fr-en/train.en"
    printf 'ok line\nbad \xff\xfe line\n' > "$W/utf/fr-en/train.fr"; printf 'a\nb\n' > "$W/utf/fr-en/train.en"
    expect_error "does not exist" --data "$W/none" --langs fr --out "$W/o"
    expect_error "no directory 'fi-en'" --data "$DATA" --langs fi --out "$W/o"
    expect_error "misaligned corpus" --data "$W/mis" --langs fr --out "$W/o"
    expect_error "invalid UTF-8" --data "$W/utf" --langs fr --out "$W/o"
    expect_error "empty corpus" --data "$W/empty" --langs fr --out "$W/o"
    expect_error "unknown language code 'xyz1'" --data "$DATA" --langs xyz1 --out "$W/o"
    expect_error "unknown mode 'fast'" --data "$DATA" --langs fr --modes fast --out "$W/o"
    printf 'a\nb\n' > "$W/r.txt"; printf 'a\n' > "$W/h.txt"
    expect_error "has 2 lines" score "$W/r.txt" "$W/h.txt" ;;
  *) fail "unknown case $CASE" ;;
esac
echo "smoke $CASE: OK"
