#!/usr/bin/env bash
# smoke_test.sh — CI checks of tcd_bert (each well under 2 minutes):
#   smoke_test.sh BIN WORK CASE [MPIRUN ARGS...]
# CASE: smoke (tiny end-to-end run with the ablations: tables, log, plot, checkpoints) |
#       glue (fine-tuning from GLUE-layout directories: the built-in task's own TSVs read back, and
#       an STS-B-layout regression task made from them) |
#       bad-input (bad files and flags; issue 16: every numeric flag out of range, a directory
#       where a file is expected, a label outside the task's set, an output that is a device node
#       of our own (mknod c 1 7) or a FIFO, --out on a full 64 KiB tmpfs this script mounts; the
#       cases that need root are skipped with a message when refused) |
#       finetune-from (fine-tuning an earlier run's checkpoints: its scores reproduced bit for bit at
#       the same flags, other fine-tuning flags taken, every mismatch of flags, checkpoints, vocabulary
#       or log refused with a message naming it, the earlier run's folder left unchanged) |
#       mpi2 (the smoke run under MPIRUN ARGS, e.g. mpirun -np 2: tables printed once, every output
#       written, and a NaN stops every rank with one message)
# The smoke run reads the default corpus (build/tcd-data of the source tree); when it is missing
# tcd_bert builds it with scripts/build_tcd_corpus.sh (apt-get download, ~20 MB).
set -euo pipefail
BIN=$1 WORK=$2 CASE=$3
shift 3
LAUNCH=("$@")  # mpi2: the launcher and its arguments
W=$WORK/$CASE
MNT=$W/full
cleanup() { mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"; return 0; }
trap cleanup EXIT
cleanup
rm -rf "$W"
mkdir -p "$W"
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
expect_flag_error() {  # a flag CLI11 rejects: any failing status (CLI11's are 100+), no signal
  local want=$1; shift
  set +e
  "$BIN" "$@" > "$W/out.txt" 2>&1
  local rc=$?
  set -e
  [[ $rc -ne 0 && $rc -lt 128 ]] || { cat "$W/out.txt"; fail "exit status $rc for: $*"; }
  grep -qF -- "$want" "$W/out.txt" || { cat "$W/out.txt"; fail "no '$want' in the error of: $*"; }
  echo "ok ($rc): $(grep -F -- "$want" "$W/out.txt" | head -n 1)"
}
case $CASE in
  smoke)
    "$BIN" --smoke --ablations --out "$W/run" | tee "$W/out.txt"
    # the main table and the paper's Tables 3 (ablation), 1 (alignment), 4 (OOD); no Table 2 (epoch alignment)
    for t in "Main table" "Table 1" "Table 3" "Table 4"; do grep -q "^$t" "$W/out.txt" || fail "no $t"; done
    grep -q "| MoE BERT w/ TCD (T+I+A) " "$W/out.txt" || fail "no ablation row"
    grep -qF "dropless, router W_r x + b_r, lambda_B 1000; TCD: lambda_T 1 lambda_I 1 lambda_A 0," "$W/out.txt" || fail "not the paper's weights and router"
    [[ $(grep -c '"event":"pretrain_epoch"' "$W/run/log.jsonl") -eq 10 ]] || fail "want 10 pre-training epochs in log.jsonl"
    grep -q '"event":"done"' "$W/run/log.jsonl" || fail "log.jsonl not finished"
    grep -q '<svg' "$W/run/trend.svg" || fail "no trend plot"
    for r in teacher moe tcd tcd-t tcd-tia; do [[ -s "$W/run/ckpt/$r.safetensors" ]] || fail "no checkpoint of $r"; done
    grep -qa 'gate.bias' "$W/run/ckpt/moe.safetensors" || fail "the MoE checkpoint has no router bias b_r (eq. 1)"
    ! grep -qa 'gate.bias' "$W/run/ckpt/teacher.safetensors" || fail "the vanilla teacher has a router bias"
    [[ -s "$W/run/tasks/WNPOS/train.tsv" && -s "$W/run/spm.model" ]] || fail "no task TSV or vocabulary" ;;
  glue)
    "$BIN" --smoke --no-trend --out "$W/a" > "$W/a.txt"
    "$BIN" --smoke --no-trend --glue-dir "$W/a/tasks/WNPOS" --task WNPOS --out "$W/b" | tee "$W/b.txt"
    grep -q "task WNPOS .*200 train / 100 dev examples, $W/a/tasks/WNPOS" "$W/b.txt" || fail "WNPOS TSVs not read back"
    mkdir -p "$W/stsb"
    for split in train dev; do  # STS-B layout: 10 columns, score last; pairs of definitions, 5 = same
      awk -F'\t' 'NR == 1 { print "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"; next }
                   { prev = (NR == 2 ? $1 : last); same = (NR % 2 == 0);
                     printf "%d\tmain\tx\t2012\t%d\tnone\tnone\t%s\t%s\t%.1f\n", NR, NR, $1, same ? $1 : prev, same ? 5 : 0;
                     last = $1 }' "$W/a/tasks/WNPOS/$split.tsv" > "$W/stsb/$split.tsv"
    done
    "$BIN" --smoke --no-trend --glue-dir "$W/stsb" --task STS-B --out "$W/c" | tee "$W/c.txt"
    grep -q "task STS-B (pairs, regression)" "$W/c.txt" || fail "STS-B not read"
    grep -q "| MoE BERT w/ TCD .*pearson .* spearman " "$W/c.txt" || fail "no Pearson/Spearman in Table 1" ;;
  bad-input)
    expect_error "corpus not found: '/nonexistent/tcd'" --smoke --data /nonexistent/tcd --out "$W/o"
    : > "$W/empty.txt"
    expect_error "is empty (no text)" --smoke --corpus "$W/empty.txt" --out "$W/o"
    printf 'good line\nbad \xff\xfe line\n' > "$W/latin.txt"
    expect_error "latin.txt:2: invalid UTF-8" --smoke --corpus "$W/latin.txt" --out "$W/o"
    mkdir -p "$W/glue"
    printf 'sentence\tlabel\na fine film\t1\nthree\tcolumns\t0\n' > "$W/glue/train.tsv"
    printf 'sentence\tlabel\nok\t0\n' > "$W/glue/dev.tsv"
    expect_error "train.tsv:3: 3 columns, expected 2" --smoke --glue-dir "$W/glue" --task SST-2 --out "$W/o"
    expect_error "student has 2 layers but teacher has 3" --smoke --teacher-layers 3 --out "$W/o"
    expect_error "group size 1000 is larger than the 512 real tokens in the batch (8 x 64)" \
      --smoke --group-size 1000 --out "$W/o"
    expect_error "loss became" --smoke --lr 1e30 --out "$W/o"
    expect_error "unknown task 'NOPE'" --smoke --task NOPE --out "$W/o"
    # numbers (issue 16)
    expect_flag_error "--lr: 0 is not > 0" --smoke --lr 0 --out "$W/o"
    expect_flag_error "--lr: -1 is not > 0" --smoke --lr -1 --out "$W/o"
    expect_flag_error "--lr: 'abc' is not a number" --smoke --lr abc --out "$W/o"
    expect_flag_error "--epochs: -1 is not >= 0" --smoke --epochs -1 --out "$W/o"
    expect_flag_error "--experts: 0 is not > 0" --smoke --experts 0 --out "$W/o"
    expect_flag_error "--lambda-t: -0.5 is not >= 0" --smoke --lambda-t -0.5 --out "$W/o"
    expect_flag_error "--ft-lr: 'nan' is not a finite number" --smoke --ft-lr nan --out "$W/o"
    expect_flag_error "--vocab: 50 is not in [100, 64000]" --smoke --vocab 50 --out "$W/o"
    expect_flag_error "--seed: 'abc' is not a non-negative integer" --smoke --seed abc --out "$W/o"
    expect_error "--seeds: '-1' is not a non-negative integer" --smoke --seeds 1,-1 --out "$W/o"
    expect_error "--seeds: seed 2 is given twice" --smoke --seeds 2,2 --out "$W/o"
    expect_flag_error "--ft-warmup: 1 is not in [0, 1)" --smoke --ft-warmup 1 --out "$W/o"
    expect_flag_error "--ft-warmup: -0.1 is not in [0, 1)" --smoke --ft-warmup -0.1 --out "$W/o"
    expect_error "--seeds: '99999999999999999999999' is too large" --smoke --seeds 99999999999999999999999 --out "$W/o"
    expect_error "--max-train 0 must be a positive number of examples, or -1 for all" --smoke --max-train 0 --out "$W/o"
    expect_error "--max-dev -5 must be a positive number" --smoke --max-dev -5 --out "$W/o"
    expect_error "--teacher-layers 0 must be positive" --smoke --teacher-layers 0 --out "$W/o"
    expect_error "--heads 3 does not divide --dim 32" --smoke --heads 3 --out "$W/o"
    # files (issue 16): a directory where a file is expected, a label outside the task's set
    mkdir -p "$W/cdir"
    expect_error "read_text_lines: '$W/cdir': is a directory" --smoke --corpus "$W/cdir" --out "$W/o"
    printf 'sentence\tlabel\na fine film\t1\na bad film\t7\n' > "$W/glue/train.tsv"
    expect_error "train.tsv:3: unknown label '7' for SST-2 (known: 0, 1)" --smoke --glue-dir "$W/glue" --task SST-2 --out "$W/o"
    rm "$W/glue/train.tsv" && mkdir "$W/glue/train.tsv"
    expect_error "glue: cannot open '$W/glue/train.tsv' (SST-2 train split): is a directory" \
      --smoke --glue-dir "$W/glue" --task SST-2 --out "$W/o"
    # outputs (issue 16): refused before any work, what was there left alone
    if mknod "$W/node" c 1 7 2>/dev/null; then
      mkdir -p "$W/o_dev" && ln -s ../node "$W/o_dev/results.md"
      expect_error "(resolved to '$W/o_dev/../node') is a character device; refusing to replace it" --smoke --out "$W/o_dev"
      [[ -c "$W/node" && -L "$W/o_dev/results.md" ]] || fail "the device node or the link to it was replaced"
    else
      echo "SKIP: mknod refused (not root?): the device-node case is not checked"
    fi
    mkdir -p "$W/o_fifo" && mkfifo "$W/o_fifo/log.jsonl"
    expect_error "log.jsonl' is a FIFO; refusing to replace it" --smoke --out "$W/o_fifo"
    [[ -p "$W/o_fifo/log.jsonl" ]] || fail "the FIFO was replaced"
    mkdir -p "$MNT"
    if mount -t tmpfs -o size=64k tmpfs "$MNT" 2>/dev/null; then
      expect_error "write: writing '$MNT/spm_train.txt' failed: No space left on device" --smoke --out "$MNT"
      ! grep -q "^total .* wrote" "$W/out.txt" || fail "a success line after a failed write"
      umount "$MNT"
    else
      echo "SKIP: mount -t tmpfs refused (not root?): the full-disk case is not checked"
    fi ;;
  finetune-from)
    "$BIN" --smoke --ablations --out "$W/a" > "$W/a.txt"
    sum_a=$(cd "$W/a" && find . -type f | sort | xargs sha256sum)
    # the same fine-tuning flags on the read-back checkpoints: the earlier run's last-epoch scores, bit for bit
    "$BIN" --smoke --ablations --finetune-from "$W/a" --out "$W/b" | tee "$W/b.txt"
    grep -q "^pre-trained models: the last checkpoints of $W/a" "$W/b.txt" || fail "no pre-trained-models line"
    [[ $(grep -c '"event":"pretrained"' "$W/b/log.jsonl") -eq 5 ]] || fail "want 5 read-back models in log.jsonl"
    # Table 3 (the logged L_T, L_I, L_A of the last epoch, the LL measured again, the scores) as the earlier run's
    t3() { sed -n '/^Table 3/,/^$/p' "$1"; }
    [[ -n "$(t3 "$W/a.txt")" && "$(t3 "$W/a.txt")" == "$(t3 "$W/b.txt")" ]] || { t3 "$W/b.txt"; fail "Table 3 differs"; }
    ! grep -q '"event":"pretrain_epoch"' "$W/b/log.jsonl" || fail "pre-trained again"
    [[ ! -e "$W/b/trend.svg" && ! -e "$W/b/ckpt/moe.safetensors" ]] || fail "a trend or a checkpoint from a run that did not pre-train"
    last=$(grep '"event":"pretrain_epoch"' "$W/a/log.jsonl" | tail -n 1 | sed 's/.*"epoch":\([0-9]*\).*/\1/')
    strip() { grep '"event":"finetune"' "$1" | grep "\"epoch\":$last," | sed 's/"seconds":[^,}]*//'; }
    [[ -n "$(strip "$W/a/log.jsonl")" && "$(strip "$W/a/log.jsonl")" == "$(strip "$W/b/log.jsonl")" ]] ||
      { strip "$W/a/log.jsonl"; strip "$W/b/log.jsonl"; fail "the read-back checkpoints fine-tune to other scores"; }
    # other fine-tuning flags are free: epochs, learning rates, the adapter width
    "$BIN" --smoke --finetune-from "$W/a" --ft-epochs 2 --ft-lr 2e-3 --adapter-dim 16 --out "$W/c" > "$W/c.txt"
    grep -q "^\[fine-tuning\] WNPOS, 2 epochs, lr 0.002 (full) / 0.003 (adapters of width 16)" "$W/c.txt" || fail "no fine-tuning header"
    grep -q '"adapter_dim":16' "$W/c/log.jsonl" || fail "adapter width not in the config line"
    # a log from before --pretrain-decay existed (no such key) was pre-trained with today's default, adamw
    cp -r "$W/a" "$W/old" && sed -i 's/,"pretrain_decay":"adamw"//' "$W/old/log.jsonl"
    ! grep -q pretrain_decay "$W/old/log.jsonl" || fail "could not make an older log"
    "$BIN" --smoke --finetune-from "$W/old" --out "$W/d" > "$W/d.txt" || { cat "$W/d.txt"; fail "an older log was refused"; }
    expect_error 'pre-trained with pretrain_decay "adamw"' --smoke --finetune-from "$W/old" --pretrain-decay l2 --out "$W/o"
    # the pre-training flags are checked against the log; the checkpoints against their runs
    expect_error "pre-trained with dim 32 ($W/a/log.jsonl), this run has 16: pass the pre-training run's --dim" \
      --smoke --finetune-from "$W/a" --dim 16 --out "$W/o"
    expect_error "pre-trained with router_bias true" --smoke --finetune-from "$W/a" --no-router-bias --out "$W/o"
    expect_error 'pre-trained with pretrain_decay "adamw"' --smoke --finetune-from "$W/a" --pretrain-decay l2 --out "$W/o"
    expect_error "pre-trained with seed 1" --smoke --finetune-from "$W/a" --seed 2 --out "$W/o"
    expect_error "pre-trained with segments 96" --smoke --finetune-from "$W/a" --segments 50 --out "$W/o"
    cp -r "$W/a" "$W/noabl" && rm "$W/noabl/ckpt/tcd-t.safetensors"
    expect_error "no checkpoint '$W/noabl/ckpt/tcd-t.safetensors' of run 'tcd-t'" --smoke --ablations --finetune-from "$W/noabl" --out "$W/o"
    expect_error "has held-out LL" --smoke --finetune-from "$W/a" --heldout-segments 8 --out "$W/o"
    expect_error "is the --finetune-from folder" --smoke --finetune-from "$W/a" --out "$W/a"
    expect_error "--finetune-from: '$W/none' is not a directory" --smoke --finetune-from "$W/none" --out "$W/o"
    cp -r "$W/a" "$W/swap" && cp "$W/a/ckpt/moe.safetensors" "$W/swap/ckpt/tcd.safetensors"
    expect_error "'$W/swap/ckpt/tcd.safetensors' is not a tcd_bert checkpoint of run 'tcd' (its format is 'tcd_bert moe')" \
      --smoke --finetune-from "$W/swap" --out "$W/o"
    cp "$W/a/ckpt/tcd.safetensors" "$W/swap/ckpt/" && head -c 5000 "$W/a/ckpt/moe.safetensors" > "$W/swap/ckpt/moe.safetensors"
    expect_error "'$W/swap/ckpt/moe.safetensors' declares a header of" --smoke --finetune-from "$W/swap" --out "$W/o"
    cp "$W/a/ckpt/moe.safetensors" "$W/swap/ckpt/" && printf '{"event":\n' >> "$W/swap/log.jsonl"
    expect_error "$W/swap/log.jsonl:$(wc -l < "$W/swap/log.jsonl"): " --smoke --finetune-from "$W/swap" --out "$W/o"
    # a run whose log says 3 epochs but whose last run stopped at 2: its checkpoints are not comparable
    cp -r "$W/a" "$W/short" && sed -i '1s/"epochs":2,/"epochs":3,/' "$W/short/log.jsonl"
    expect_error "run 'teacher' stopped at epoch 2 of 3" --smoke --epochs 3 --finetune-from "$W/short" --out "$W/o"
    # a read-back run's folder is not a pre-training run's
    expect_error "$W/b did not pre-train (it fine-tuned the checkpoints of \"$W/a\")" --smoke --finetune-from "$W/b" --out "$W/o"
    cp "$W/a/log.jsonl" "$W/swap/" && rm "$W/swap/spm.model" && expect_error "no vocabulary '$W/swap/spm.model'" --smoke --finetune-from "$W/swap" --out "$W/o"
    [[ "$sum_a" == "$(cd "$W/a" && find . -type f | sort | xargs sha256sum)" ]] || fail "the pre-training run's folder was changed" ;;
  mpi2)
    [[ ${#LAUNCH[@]} -gt 0 ]] || fail "mpi2 needs the launcher: smoke_test.sh BIN WORK mpi2 mpirun -np 2 ..."
    "${LAUNCH[@]}" "$BIN" --smoke --out "$W/run" | tee "$W/out.txt"
    grep -q "^data parallel: 2 ranks" "$W/out.txt" || fail "not 2 ranks"
    ! grep -q "models differ" "$W/out.txt" || fail "the ranks' models differ"
    for t in "Main table" "Table 1" "Table 4"; do
      [[ $(grep -c "^$t" "$W/out.txt") -eq 1 ]] || fail "$t not printed exactly once"
    done
    [[ $(grep -c '"event":"pretrain_epoch"' "$W/run/log.jsonl") -eq 6 ]] || fail "want 6 pre-training epochs in log.jsonl"
    grep -q '"event":"done"' "$W/run/log.jsonl" || fail "log.jsonl not finished"
    grep -q '<svg' "$W/run/trend.svg" || fail "no trend plot"
    grep -q '^| MoE BERT w/ TCD ' "$W/run/results.md" || fail "no results.md"
    for r in teacher moe tcd; do [[ -s "$W/run/ckpt/$r.safetensors" ]] || fail "no checkpoint of $r"; done
    [[ -s "$W/run/tasks/WNPOS/train.tsv" && -s "$W/run/spm.model" ]] || fail "no task TSV or vocabulary"
    set +e
    "${LAUNCH[@]}" "$BIN" --smoke --lr 1e30 --out "$W/nan" > "$W/nan.txt" 2>&1
    rc=$?
    set -e
    [[ $rc -ne 0 ]] || { cat "$W/nan.txt"; fail "a NaN run exited 0"; }
    [[ $(grep -c "loss became" "$W/nan.txt") -eq 1 ]] || { cat "$W/nan.txt"; fail "want the NaN message exactly once"; }
    echo "ok: $(grep "loss became" "$W/nan.txt")" ;;
  *) fail "unknown case $CASE" ;;
esac
echo "PASS $CASE"
