#!/usr/bin/env bash
# grid.sh — runs a grid of an example's settings x seeds, one thread per run and JOBS (default 2)
# runs at a time: with one thread a run's numbers do not depend on how loaded the machine is, and
# two runs share a 2-core machine without fighting over it. Each line of the grid file is
# "NAME FLAGS..." ('#' lines are comments); run NAME with seed S goes to OUT/NAME_sS (its output
# in OUT/NAME_sS.log). A finished tsjt_wmt run is not retrained (it resumes / re-evaluates).
# In FLAGS, {seed} stands for S and {out} for OUT (e.g. a file an earlier grid saved per seed).
#   scripts/experiments/grid.sh tsjt_wmt GRID_FILE OUT "1 2 3"
#   scripts/experiments/grid.sh ones_vit GRID_FILE OUT "1 2 3"
#   scripts/experiments/grid.sh tcd_bert GRID_FILE OUT "1 2 3"
# BIN: the binary to run (default build/examples/EXAMPLE/EXAMPLE); give a copy, so that
# rebuilding during a grid changes nothing. Summaries: tsjt_summary.py, ones_summary.py,
# tcd_summary.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
example=$1 grid=$2 out=$3 seeds=${4:-"1 2 3"} jobs=${JOBS:-2}
bin=${BIN:-build/examples/$example/$example}
[[ -x $bin ]] || { echo "grid: build $bin first (cmake --build build --target $example)" >&2; exit 1; }
case $example in
  tsjt_wmt)
    [[ -d build/gettext-catalogs/root ]] || UNPACK_ONLY=1 scripts/build_gettext_corpus.sh build/gettext-catalogs
    fixed="--catalogs build/gettext-catalogs/root --no-progress" ;;
  ones_vit) fixed="--throughput-images 0" ;;
  tcd_bert) fixed="" ;;
  *) echo "grid: unknown example '$example' (tsjt_wmt, ones_vit, tcd_bert)" >&2; exit 1 ;;
esac
mkdir -p "$out"
while read -r name flags; do
  [[ -z $name || $name == \#* ]] && continue
  for s in $seeds; do
    f=${flags//\{seed\}/$s}; f=${f//\{out\}/$out}
    printf '%s\0' "MOEKD_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $bin $fixed --seed $s $f --out $out/${name}_s$s > $out/${name}_s$s.log 2>&1 || echo 'grid: ${name}_s$s failed (see $out/${name}_s$s.log)' >&2"
  done
done < "$grid" | xargs -0 -P "$jobs" -I{} bash -c {}
