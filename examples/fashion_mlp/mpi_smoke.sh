#!/usr/bin/env bash
# mpi_smoke.sh — fashion_mlp under `mpirun -np 2 --batch 64` must learn, and end like one process
# with --batch 128 (same global batches, gradients averaged): final test accuracy within 0.005,
# last train loss within 0.002 (fp32 summation order differs). Rank 0 alone prints.
#   mpi_smoke.sh FASHION_MLP MPIRUN [mpirun args...]
set -eu
bin=$1; shift
args=(--epochs 1 --train-limit 6000 --test-limit 2000)
one=$("$bin" "${args[@]}" --batch 128)
two=$("$@" -np 2 "$bin" "${args[@]}" --batch 64 --min-acc 0.70)
echo "$one"; echo "--- 2 ranks:"; echo "$two"
[ "$(grep -c '^final test accuracy' <<<"$two")" = 1 ] || { echo "mpi_smoke: rank 0 alone must print"; exit 1; }
grep -q 'batch 64 x 2 rank(s)' <<<"$two" || { echo "mpi_smoke: not a 2-rank run"; exit 1; }
acc() { awk '/^final test accuracy/ {print $4}' <<<"$1"; }
loss() { awk '/^epoch/ {l=$5} END {print l}' <<<"$1"; }
awk -v a="$(acc "$one")" -v b="$(acc "$two")" -v la="$(loss "$one")" -v lb="$(loss "$two")" 'BEGIN {
  da = a - b; if (da < 0) da = -da; dl = la - lb; if (dl < 0) dl = -dl;
  printf "mpi_smoke: accuracy 1 rank %s vs 2 ranks %s, train loss %s vs %s\n", a, b, la, lb;
  exit (da <= 0.005 && dl <= 0.002) ? 0 : 1 }' || { echo "mpi_smoke: 2 ranks differ from 1 rank"; exit 1; }
echo "mpi_smoke: ok"
