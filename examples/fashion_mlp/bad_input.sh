#!/usr/bin/env bash
# bad_input.sh — fashion_mlp against hostile or careless input (issue 16). Each case must end
# with a clear error naming the flag or the file and a non-zero exit, and leave what was at the
# path alone:
#   numbers   --lr 0 / -1 / abc and every other numeric flag out of its range
#   save      --save onto a device node of our own (mknod c 1 7, like /dev/full), a FIFO, a
#             directory: refused, the node still what it was; through a symlink: the file it
#             points to gets the weights, the link stays a link
#   full      --save onto a full disk (a 64 KiB tmpfs this script mounts): non-zero, names the
#             file, no "wrote" line
#   data      a directory where an IDX file is expected; a test label 12 of 10 classes
# A case that needs root (mknod, mount) is skipped with a message when refused, never passed.
#   bad_input.sh FASHION_MLP WORK
set -uo pipefail
BIN=$1 WORK=$2
FM=/usr/share/datasets/fashion-mnist
W=$WORK/fashion_bad
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
QUICK=(--epochs 1 --train-limit 600 --test-limit 200 --hidden 16)
# expect_error "message part" args...: exit status 1 or 2 (CLI11's parse errors) and the message
expect_error() {
  local want=$1; shift
  "$BIN" "$@" > "$W/out.txt" 2>&1
  local rc=$?
  [[ $rc -ne 0 ]] || { cat "$W/out.txt"; fail "exit status 0 for: $*"; return; }
  grep -qF -- "$want" "$W/out.txt" || { cat "$W/out.txt"; fail "no '$want' in the error of: $*"; return; }
  ! grep -q "^wrote " "$W/out.txt" || { cat "$W/out.txt"; fail "a 'wrote' line after a failure: $*"; return; }
  echo "ok ($rc): $*  ->  $(grep -F -- "$want" "$W/out.txt" | head -n 1)"
}

# ---- numbers ------------------------------------------------------------------------------------
expect_error "--lr: 0 is not > 0" --lr 0
expect_error "--lr: -1 is not > 0" --lr -1
expect_error "--lr: 'abc' is not a number" --lr abc
expect_error "--epochs" --epochs 0
expect_error "--batch" --batch -4
expect_error "--hidden" --hidden 0
expect_error "--momentum: 1.5 is not in [0, 0.999]" --momentum 1.5
expect_error "--train-limit" --train-limit 0
expect_error "--test-limit" --test-limit -1
expect_error "--min-acc: 2 is not in [0, 1]" --min-acc 2
expect_error "--seed: 'abc' is not a non-negative integer" --seed abc
expect_error "--seed: '-1' is not a non-negative integer" --seed -1

# ---- save targets -------------------------------------------------------------------------------
if mknod "$W/full_dev" c 1 7 2>/dev/null; then
  expect_error "is a character device; refusing to replace it" "${QUICK[@]}" --save "$W/full_dev"
  [[ -c "$W/full_dev" ]] || fail "--save replaced the device node by a regular file"
  ln -s full_dev "$W/link_to_dev"
  expect_error "is a character device" "${QUICK[@]}" --save "$W/link_to_dev"
  [[ -c "$W/full_dev" && -L "$W/link_to_dev" ]] || fail "the node or the link to it was replaced"
else
  echo "SKIP: mknod refused (not root?): the device-node case is not checked"
fi
mkfifo "$W/fifo"
expect_error "is a FIFO; refusing to replace it" "${QUICK[@]}" --save "$W/fifo"
[[ -p "$W/fifo" ]] || fail "--save replaced the FIFO"
mkdir "$W/adir"
expect_error "is a directory; refusing to replace it" "${QUICK[@]}" --save "$W/adir"
[[ -d "$W/adir" ]] || fail "--save replaced the directory"
mkdir "$W/real"
echo old > "$W/real/w.safetensors"
ln -s real/w.safetensors "$W/link.safetensors"
"$BIN" "${QUICK[@]}" --save "$W/link.safetensors" > "$W/out.txt" 2>&1 || { cat "$W/out.txt"; fail "save through a symlink failed"; }
[[ -L "$W/link.safetensors" ]] || fail "the symlink --save went through is no longer a link"
[[ $(stat -c %s "$W/real/w.safetensors") -gt 1000 ]] || fail "the file the link points to kept its old content"
echo "ok: --save through a symlink wrote $(stat -c %s "$W/real/w.safetensors") bytes into real/w.safetensors, the link stays"

# ---- full disk ----------------------------------------------------------------------------------
mkdir -p "$MNT"
if mount -t tmpfs -o size=64k tmpfs "$MNT" 2>/dev/null; then
  expect_error "$MNT/w.safetensors" --epochs 1 --train-limit 600 --test-limit 200 --save "$MNT/w.safetensors"  # 800 KB of weights
  grep -q "No space left on device" "$W/out.txt" || { cat "$W/out.txt"; fail "the full-disk error does not say why"; }
  [[ ! -e "$MNT/w.safetensors" ]] || fail "a partial w.safetensors was left on the full disk"
  umount "$MNT"
else
  echo "SKIP: mount -t tmpfs refused (not root?): the full-disk case is not checked"
fi

# ---- data ---------------------------------------------------------------------------------------
mkdir -p "$W/dirdata"
for f in "$FM"/*.gz; do ln -s "$f" "$W/dirdata/"; done
rm "$W/dirdata/train-images-idx3-ubyte.gz"
mkdir "$W/dirdata/train-images-idx3-ubyte.gz"
expect_error "$W/dirdata/train-images-idx3-ubyte.gz': is a directory" --data "$W/dirdata"
mkdir -p "$W/label12"
for f in "$FM"/*.gz; do ln -s "$f" "$W/label12/"; done
rm "$W/label12/t10k-labels-idx1-ubyte.gz"
python3 - "$FM/t10k-labels-idx1-ubyte.gz" "$W/label12/t10k-labels-idx1-ubyte.gz" <<'EOF'
import gzip, sys
b = bytearray(gzip.open(sys.argv[1]).read())
b[8 + 17] = 12  # label of test image 17: 12, outside the 10 classes
gzip.open(sys.argv[2], "wb").write(bytes(b))
EOF
expect_error "t10k-labels-idx1-ubyte.gz': label 12 at index 17 is outside [0, 10)" --data "$W/label12" "${QUICK[@]}"
[[ $FAILS -eq 0 ]] || { echo "$FAILS case(s) failed"; exit 1; }
echo "PASS fashion_mlp bad input"
