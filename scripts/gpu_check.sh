#!/usr/bin/env bash
# gpu_check.sh — the one prepared device check (issue #14): on a machine with an NVIDIA GPU,
# builds the gpu-labelled tests (and any GPU benchmark) for the GPU it finds, against the device
# kit alone (scripts/pack_device_kit.sh; the GPU machine has no Debian dev packages and no
# network), runs `ctest -L gpu` and the benchmarks, and prints a summary. Budget: under 8 minutes
# on one H200 with 16 cores. docs/device_kit.md says how to send it there.
#
#   scripts/gpu_check.sh                   the full check (needs nvidia-smi and nvcc)
#   scripts/gpu_check.sh --configure-only  only the kit-only configure + the target list (no GPU
#                                          needed; tests/kit/kit_configure_test.sh runs this)
# Environment: MOEKD_KIT_DIR (default .device-kit), MOEKD_GPU_BUILD (default build-gpu),
# MOEKD_GPU_ARCH (default: the GPU's compute capability, 9.0 -> 90; 90 without a GPU),
# MOEKD_GPU_CUDA (ON/OFF, --configure-only: default ON when nvcc is found),
# MOEKD_GPU_CHECK_BUDGET (seconds for everything, default 450), OUT (the log goes to
# $OUT/gpu_check.log, else to the build folder).
# Exit status: non-zero when the build fails, a test fails, or a test is skipped (a GPU is
# here; only the *_no_device tests, which skip by design where a GPU is present, may skip).
# A GPU benchmark is a bench/ executable target whose name contains "gpu" or "cuda"; each is
# built and run once with no arguments (there are none yet; the check says so).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/kit_configure.sh

MODE=full
[ "${1:-}" = --configure-only ] && MODE=configure
KIT="${MOEKD_KIT_DIR:-$PWD/.device-kit}"
BUILD="${MOEKD_GPU_BUILD:-build-gpu}"
BUDGET="${MOEKD_GPU_CHECK_BUDGET:-450}"
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$BUILD"
LOG="${OUT:+$OUT/gpu_check.log}"
LOG="${LOG:-$BUILD/gpu_check.log}"

left() {  # left CAP: seconds for the next step, at most CAP, within what is left of the budget
  local l=$((BUDGET - SECONDS))
  [ "$l" -gt 5 ] || { echo "gpu_check: time budget (${BUDGET}s) spent" >&2; return 1; }
  echo $((l < $1 ? l : $1))
}

# exe_targets: every executable target of the build (ninja paths relative to the build folder).
exe_targets() {
  ninja -C "$BUILD" -t targets all | awk -F': ' '$2 ~ /EXECUTABLE_LINKER/ { print $1 }'
}
# ctest_targets: the executables that `ctest -L gpu` runs: test names from ctest itself, their
# commands (any argument that is one of our executables, so `cmake -E env ... prog` counts too)
# from the CTestTestfile.cmake files, since ctest shows no command before it is built.
ctest_targets() {
  ctest --test-dir "$BUILD" -L gpu --show-only=json-v1 | python3 -c '
import glob, json, os, re, sys
b = os.path.realpath(sys.argv[1]); exes = set(sys.argv[2].split())
names = {t["name"] for t in json.load(sys.stdin)["tests"]}
out = set()
for f in glob.glob(b + "/**/CTestTestfile.cmake", recursive=True):
    for m in re.finditer(r"^add_test\(\[=\[(.+?)\]=\] (.*)\)$", open(f).read(), re.M):
        if m[1] in names:
            out |= {os.path.relpath(os.path.realpath(a), b) for a in re.findall(r"\"([^\"]+)\"", m[2])} & exes
print(" ".join(sorted(out)))' "$BUILD" "$(exe_targets)"
}
bench_targets() {  # bench/ executables named *gpu* or *cuda*
  exe_targets | grep -E '^bench/[^/]*(gpu|cuda)[^/]*$' | tr '\n' ' ' || true
}

main() {
  local gpu="none" driver="-" arch="${MOEKD_GPU_ARCH:-}" cuda=ON extra=()
  [ -f "$KIT/MANIFEST.txt" ] ||
    { echo "gpu_check: no device kit at $KIT (run scripts/pack_device_kit.sh on the build machine, carry .device-kit)"; return 1; }
  for c in cmake ninja ctest python3 timeout; do
    command -v $c >/dev/null || { echo "gpu_check: '$c' not found"; return 1; }
  done
  if [ "$MODE" = full ]; then
    command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found: no NVIDIA GPU here"; return 1; }
    command -v nvcc >/dev/null || { echo "gpu_check: nvcc not found"; return 1; }
    IFS=, read -r gpu driver cap < <(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader | head -1)
    driver=${driver# } cap=${cap# }
    [ -n "${cap:-}" ] || { echo "gpu_check: nvidia-smi reported no GPU"; return 1; }
    arch="${arch:-${cap/./}}"
    echo "gpu_check: GPU: $gpu, driver $driver, compute capability $cap -> CUDA architecture $arch"
    nvcc --version | tail -2
    # NCCL: the toolkit may lack it; the image's PyTorch brings one (pip nvidia-nccl-cu13).
    local nccl
    nccl=$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)
    if [ -n "$nccl" ] && [ -f "$nccl/include/nccl.h" ] && ! ls "$(dirname "$(command -v nvcc)")"/../lib*/libnccl.so >/dev/null 2>&1; then
      extra+=("-DMOEKD_NCCL_LIBRARY=$(find "$nccl/lib" -name 'libnccl.so*' | sort | head -1)" "-DMOEKD_NCCL_INCLUDE_DIR=$nccl/include")
    fi
  else
    command -v nvcc >/dev/null || cuda=OFF
    cuda="${MOEKD_GPU_CUDA:-$cuda}" arch="${arch:-90}"
  fi

  echo "gpu_check: configure $BUILD against $KIT only (MOEKD_CUDA=$cuda, architectures $arch)"
  KIT_CONFIGURE_TIMEOUT=$(left 180) kit_configure "$KIT" "$BUILD" "$cuda" "$arch" \
    -DMOEKD_EMULATED_CUDA=OFF "${extra[@]}" || { echo "gpu_check: configure FAILED"; return 1; }
  local tests benches
  read -ra tests <<<"$(ctest_targets)"
  read -ra benches <<<"$(bench_targets)"
  echo "gpu_check: test programs: ${tests[*]:-none}"
  echo "gpu_check: GPU benchmarks: ${benches[*]:-none in bench/ (skipped)}"
  [ "$MODE" = configure ] && return 0
  [ ${#tests[@]} -gt 0 ] || { echo "gpu_check: no gpu-labelled test programs"; return 1; }

  kit_env "$KIT"
  local t0=$SECONDS
  timeout "$(left 330)" ninja -C "$BUILD" -j "$(nproc)" "${tests[@]}" "${benches[@]}" || { echo "gpu_check: build FAILED"; return 1; }
  echo "gpu_check: built in $((SECONDS - t0)) s"

  t0=$SECONDS
  local rc=0
  timeout "$(left 300)" ctest --test-dir "$BUILD" -L gpu --output-on-failure | tee "$BUILD/gpu_ctest.txt" || rc=$?
  local pass fail skip badskip
  pass=$(grep -cE 'Test +#[0-9]+: .* Passed' "$BUILD/gpu_ctest.txt" || true)
  skip=$(grep -E 'Test +#[0-9]+: .*\*\*\*Skipped' "$BUILD/gpu_ctest.txt" | awk '{ print $4 }' || true)
  fail=$(grep -E 'Test +#[0-9]+: ' "$BUILD/gpu_ctest.txt" | grep -vE ' Passed|\*\*\*Skipped' | awk '{ print $4 }' || true)
  badskip=$(grep -v '_no_device$' <<<"$skip" | sed '/^$/d' || true)
  echo "gpu_check: tests ran in $((SECONDS - t0)) s"

  local bench_fail=0 b
  for b in "${benches[@]}"; do
    echo "gpu_check: benchmark $b"
    timeout "$(left 120)" "$BUILD/$b" || { echo "gpu_check: benchmark $b FAILED"; bench_fail=$((bench_fail + 1)); }
  done

  echo "==================== gpu_check summary ===================="
  echo "GPU:        $gpu (driver $driver, sm_$arch)"
  echo "passed:     $pass"
  echo "failed:     $(wc -w <<<"$fail") ${fail//$'\n'/ }"
  echo "skipped:    $(wc -w <<<"$skip") ${skip//$'\n'/ } (allowed: *_no_device)"
  echo "benchmarks: ${#benches[@]} run, $bench_fail failed"
  echo "total time: $SECONDS s (budget $BUDGET s)"
  if [ "$rc" -ne 0 ] || [ -n "$fail" ] || [ -n "$badskip" ] || [ "$pass" -eq 0 ] || [ "$bench_fail" -ne 0 ]; then
    echo "gpu_check: FAILED"
    return 1
  fi
  echo "gpu_check: OK"
}

set +e
main 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
echo "gpu_check: log in $LOG"
exit "$rc"
