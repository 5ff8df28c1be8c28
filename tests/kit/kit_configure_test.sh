#!/usr/bin/env bash
# kit_configure_test.sh — proves here that the GPU machine's build can be configured from the
# device kit alone (docs/device_kit.md): packs a kit into WORK, runs the configure of
# scripts/gpu_check.sh (--configure-only, MOEKD_CUDA=ON when nvcc is here), checks in
# CMakeCache.txt that Eigen3, Catch2, OpenBLAS and zlib came from the kit and that what the kit
# leaves out (SentencePiece, cblas.h) was not found on this machine instead; then removes Eigen
# from the kit and checks that the configure fails (the test cannot pass with a piece missing).
#
#   tests/kit/kit_configure_test.sh REPO_ROOT WORK_DIR      (ctest: kit_configure, label kit)
set -euo pipefail
REPO=$(cd "$1" && pwd)
WORK=$2
rm -rf "$WORK"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
KIT=$WORK/kit
fail() { echo "kit_configure_test: FAIL: $*" >&2; exit 1; }

"$REPO/scripts/pack_device_kit.sh" "$KIT"

cuda=OFF
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi
MOEKD_KIT_DIR=$KIT MOEKD_GPU_BUILD=$WORK/build MOEKD_GPU_CUDA=$cuda \
  "$REPO/scripts/gpu_check.sh" --configure-only >"$WORK/configure.log" 2>&1 ||
  { cat "$WORK/configure.log"; fail "configure against the kit failed"; }

cache=$WORK/build/CMakeCache.txt
value() { sed -n "s/^$1:[A-Z]*=//p" "$cache"; }
for var in Eigen3_DIR Catch2_DIR nlohmann_json_DIR MOEKD_OPENBLAS_LIBRARY ZLIB_INCLUDE_DIR ZLIB_LIBRARY_RELEASE; do
  v=$(value "$var")
  case "$v" in "$KIT"/*|"$KIT") echo "ok: $var=$v" ;; *) fail "$var=$v is not inside the kit $KIT" ;; esac
done
# not in the kit, present on this machine: found means the configure still sees /usr
for var in MOEKD_SPM_INCLUDE MOEKD_CBLAS_INCLUDE_DIR; do
  v=$(value "$var")
  case "$v" in ""|*-NOTFOUND) echo "ok: $var not found (not in the kit)" ;; *) fail "$var=$v: found outside the kit" ;; esac
done
if [ "$cuda" = ON ]; then
  grep -q "^MOEKD_CUDA:BOOL=ON" "$cache" || fail "MOEKD_CUDA is not ON"
  grep -q "test programs: .*tests/gpu/gpu_test" "$WORK/configure.log" || fail "gpu_test is not among the gpu-labelled test programs"
fi
grep "^gpu_check: " "$WORK/configure.log"

# Link probe: Eigen's GEMM through the kit's OpenBLAS (EIGEN_USE_BLAS, as moekd builds) and zlib,
# run with the kit's libraries, which must resolve OpenBLAS and libgfortran from the kit.
cat >"$WORK/probe.cpp" <<'EOF'
#include <Eigen/Dense>
#include <zlib.h>
int main() {
    Eigen::MatrixXf a = Eigen::MatrixXf::Ones(64, 64);
    Eigen::MatrixXf c = a * a;
    return c(3, 5) == 64.0f && zlibVersion()[0] == '1' ? 0 : 1;
}
EOF
"${CXX:-c++}" -std=c++20 -O1 -DEIGEN_USE_BLAS -I"$KIT/include/eigen3" -I"$KIT/include" "$WORK/probe.cpp" \
  -o "$WORK/probe" -L"$KIT/lib" -lopenblas -lz || fail "the link probe does not build against the kit"
LD_LIBRARY_PATH=$KIT/lib "$WORK/probe" || fail "the link probe does not run with the kit's libraries"
deps=$(LD_LIBRARY_PATH=$KIT/lib ldd "$WORK/probe")
for lib in libopenblas.so.0 libgfortran.so.5; do
  grep -q "$lib => $KIT/lib/" <<<"$deps" || fail "$lib is not loaded from the kit"
done
echo "ok: Eigen GEMM through the kit's OpenBLAS and zlib build and run from the kit"

# Negative control: without Eigen in the kit the same configure must fail (on Eigen3).
rm -rf "$KIT/share/eigen3" "$KIT/include/eigen3"
if MOEKD_KIT_DIR=$KIT MOEKD_GPU_BUILD=$WORK/build-noeigen MOEKD_GPU_CUDA=$cuda \
     "$REPO/scripts/gpu_check.sh" --configure-only >"$WORK/noeigen.log" 2>&1; then
  fail "configure succeeded with Eigen removed from the kit: it is not isolated"
fi
grep -q "Eigen3" "$WORK/noeigen.log" || { cat "$WORK/noeigen.log"; fail "the configure without Eigen failed, but not on Eigen3"; }
echo "ok: without Eigen in the kit the configure fails on Eigen3"
echo "kit_configure_test: PASS (MOEKD_CUDA=$cuda)"
