#!/usr/bin/env bash
# bad_input.sh — ones_vit against hostile or careless input (issue 16). Each case must end with a
# clear error naming the flag or the file and a non-zero exit, leave what was there alone, and
# print no "written to" line:
#   numbers   --lr 0 / -1 / abc and the other numeric flags out of range, --top-k > --experts
#   outputs   an output file that is a device node of our own (mknod c 1 7, like /dev/full)
#             behind a symlink, or a FIFO: refused before any training, the node untouched
#   full      --out on a full disk (a 64 KiB tmpfs this script mounts): names the file
#   data      a directory where an IDX file is expected; a test label 12 of 10 classes
#   teacher   --teacher trained on other data (--train-limit, one changed training image) or
#             other flags: an error naming the difference, the teacher file byte-identical; the
#             same flags and data load it
# A case that needs root (mknod, mount) is skipped with a message when refused, never passed.
#   bad_input.sh ONES_VIT WORK
set -uo pipefail
BIN=$1 WORK=$2
FM=/usr/share/datasets/fashion-mnist
W=$WORK/ones_bad
MNT=$W/full
cleanup() { mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"; }
trap cleanup EXIT
cleanup
rm -rf "$W"
mkdir -p "$W"
FAILS=0
# KEEP_GOING=1: report every failing case instead of stopping at the first (to see which cases an
# older build fails)
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); [[ -n ${KEEP_GOING:-} ]] || exit 1; }
TINY=(--dim 16 --heads 2 --ffn-dim 32 --layers 1 --experts 2 --top-k 1 --batch 50 --train-limit 500 --test-limit 100)
expect_error() {  # expect_error "message part" args...
  local want=$1; shift
  "$BIN" "$@" > "$W/out.txt" 2>&1
  local rc=$?
  [[ $rc -ne 0 && $rc -lt 128 ]] || { cat "$W/out.txt"; fail "exit status $rc for: $*"; return; }
  grep -qF -- "$want" "$W/out.txt" || { cat "$W/out.txt"; fail "no '$want' in the error of: $*"; return; }
  ! grep -q "^written to " "$W/out.txt" || { cat "$W/out.txt"; fail "a 'written to' line after a failure: $*"; return; }
  echo "ok ($rc): $(grep -F -- "$want" "$W/out.txt" | head -n 1)"
}

# ---- numbers ------------------------------------------------------------------------------------
O=(--out "$W/o")
expect_error "--lr: 0 is not > 0" --lr 0 "${O[@]}"
expect_error "--lr" --lr -1 "${O[@]}"
expect_error "--lr: 'abc' is not a number" --lr abc "${O[@]}"
expect_error "--teacher-lr" --teacher-lr 0 "${O[@]}"
expect_error "--batch" --batch 0 "${O[@]}"
expect_error "--experts" --experts 0 "${O[@]}"
expect_error "--top-k 3 is larger than --experts 2" --experts 2 --top-k 3 "${O[@]}"
expect_error "--heads 3 does not divide --dim 64" --heads 3 "${O[@]}"
expect_error "--alpha: 1.5 is not in [0, 1]" --alpha 1.5 "${O[@]}"
expect_error "--crop-scale: 1.5 is not in [0, 1]" --crop-scale 1.5 "${O[@]}"
expect_error "--crop-scale: -0.1 is not in [0, 1]" --crop-scale -0.1 "${O[@]}"
expect_error "--temperature" --temperature 0 "${O[@]}"
expect_error "--epochs: -1 is not >= 0" --epochs -1 "${O[@]}"
expect_error "--min-acc" --min-acc 7 "${O[@]}"
expect_error "--seed: '-1' is not a non-negative integer" --seed -1 "${O[@]}"

# ---- output targets -----------------------------------------------------------------------------
if mknod "$W/full_dev" c 1 7 2>/dev/null; then
  mkdir -p "$W/o_dev"
  ln -s ../full_dev "$W/o_dev/results.md"
  expect_error "is a character device; refusing to replace it" "${TINY[@]}" --teacher-epochs 1 --epochs 1 --out "$W/o_dev"
  [[ -c "$W/full_dev" && -L "$W/o_dev/results.md" ]] || fail "the device node or the link to it was replaced"
  expect_error "is a character device" "${TINY[@]}" --save-teacher "$W/full_dev" --out "$W/o"
  [[ -c "$W/full_dev" ]] || fail "--save-teacher replaced the device node"
else
  echo "SKIP: mknod refused (not root?): the device-node case is not checked"
fi
mkdir -p "$W/o_fifo"
mkfifo "$W/o_fifo/log.jsonl"
expect_error "is a FIFO; refusing to replace it" "${TINY[@]}" --out "$W/o_fifo"
[[ -p "$W/o_fifo/log.jsonl" ]] || fail "the FIFO was replaced"

# ---- full disk ----------------------------------------------------------------------------------
mkdir -p "$MNT"
if mount -t tmpfs -o size=64k tmpfs "$MNT" 2>/dev/null; then
  head -c 60000 /dev/zero > "$MNT/filler" 2>/dev/null  # leave a few KB: the log's first lines fit, not all
  expect_error "$MNT/" "${TINY[@]}" --teacher-epochs 1 --epochs 1 --out "$MNT"
  grep -q "No space left on device" "$W/out.txt" || { cat "$W/out.txt"; fail "the full-disk error does not say why"; }
  umount "$MNT"
else
  echo "SKIP: mount -t tmpfs refused (not root?): the full-disk case is not checked"
fi

# ---- data ---------------------------------------------------------------------------------------
mkdir -p "$W/dirdata"
for f in "$FM"/*.gz; do ln -s "$f" "$W/dirdata/"; done
rm "$W/dirdata/t10k-images-idx3-ubyte.gz"
mkdir "$W/dirdata/t10k-images-idx3-ubyte.gz"
expect_error "$W/dirdata/t10k-images-idx3-ubyte.gz': is a directory" --data "$W/dirdata" "${O[@]}"
mkdir -p "$W/label12"
for f in "$FM"/*.gz; do ln -s "$f" "$W/label12/"; done
rm "$W/label12/t10k-labels-idx1-ubyte.gz"
python3 - "$FM/t10k-labels-idx1-ubyte.gz" "$W/label12/t10k-labels-idx1-ubyte.gz" <<'EOF'
import gzip, sys
b = bytearray(gzip.open(sys.argv[1]).read())
b[8 + 17] = 12  # label of test image 17: 12, outside the 10 classes
gzip.open(sys.argv[2], "wb").write(bytes(b))
EOF
expect_error "t10k-labels-idx1-ubyte.gz': label 12 at index 17 is outside [0, 10)" --data "$W/label12" "${TINY[@]}" "${O[@]}"

# ---- a teacher trained on other data or flags ---------------------------------------------------
T=$W/teacher.safetensors
"$BIN" "${TINY[@]}" --teacher-epochs 1 --runs teacher --save-teacher "$T" --out "$W/t" > "$W/out.txt" 2>&1 \
  || { cat "$W/out.txt"; fail "training the tiny teacher failed"; }
cp "$T" "$W/teacher.orig"
S=(--runs ones --epochs 0 --save-teacher "$T")  # --save-teacher too: it must not be rewritten on a mismatch
expect_error "train_data 500x784:" "${TINY[@]/500/600}" --teacher-epochs 1 --teacher "$T" "${S[@]}" --out "$W/t2"
grep -qF "vs 600x784:" "$W/out.txt" || { cat "$W/out.txt"; fail "the --train-limit difference is not named"; }
mkdir -p "$W/changed"
for f in "$FM"/*.gz; do ln -s "$f" "$W/changed/"; done
rm "$W/changed/train-images-idx3-ubyte.gz"
python3 - "$FM/train-images-idx3-ubyte.gz" "$W/changed/train-images-idx3-ubyte.gz" <<'EOF'
import gzip, sys
b = bytearray(gzip.open(sys.argv[1]).read())
b[16 + 3 * 784 + 400] ^= 0xFF  # one pixel of training image 3
gzip.open(sys.argv[2], "wb").write(bytes(b))
EOF
expect_error "was trained on other data or flags than this run uses: train_data" \
  --data "$W/changed" "${TINY[@]}" --teacher-epochs 1 --teacher "$T" "${S[@]}" --out "$W/t2"
expect_error "teacher_epochs 1 in the file vs 2 now" "${TINY[@]}" --teacher-epochs 2 --teacher "$T" "${S[@]}" --out "$W/t2"
expect_error "seed 1 in the file vs 5 now" "${TINY[@]}" --teacher-epochs 1 --seed 5 --teacher "$T" "${S[@]}" --out "$W/t2"
cmp "$T" "$W/teacher.orig" || fail "the teacher file was changed by a refused run"
"$BIN" "${TINY[@]}" --teacher-epochs 1 --teacher "$T" --runs ones --epochs 0 --out "$W/t3" > "$W/out.txt" 2>&1 \
  || { cat "$W/out.txt"; fail "the same flags and data did not load the teacher"; }
grep -q "loaded from $T" "$W/out.txt" || { cat "$W/out.txt"; fail "no 'loaded from'"; }
echo "ok: a teacher trained on other data or flags is refused (file unchanged); the same configuration loads it"
[[ $FAILS -eq 0 ]] || { echo "$FAILS case(s) failed"; exit 1; }
echo "PASS ones_vit bad input"
