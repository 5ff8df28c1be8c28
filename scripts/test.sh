#!/usr/bin/env bash
# test.sh — the README's test command: install what is missing, configure, build, run every test.
#   scripts/test.sh              Release build in build/, all tests
#   MOEKD_SANITIZE=ON scripts/test.sh   AddressSanitizer + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

SAN="${MOEKD_SANITIZE:-OFF}"
if [ "$SAN" = "ON" ]; then
  BUILD=build-asan
  # -O1 -g1: quicker to compile than -O2 -g (the sanitised build is CI's longest step) and
  # still reports file:line. The example programs' smoke runs are training runs (minutes under
  # ASan) and run in the release pass; their library code is exercised here by the unit tests.
  # UBSan without its null, alignment, pointer-overflow and object-size checks: they double the
  # sanitised compile time (moe_test.cpp: 113 s -> 54 s user with them left out, gcc 12 -O1) and
  # are covered elsewhere: a null dereference is a SEGV that ASan reports with its stack, and
  # the file-format fuzzers (tests/fuzz, clang, full -fsanitize=undefined) keep all four on the
  # readers, where a misaligned or out-of-object access would come from.
  EXTRA=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" -DMOEKD_SANITIZE=ON
         -DMOEKD_UBSAN_SKIP=null,alignment,pointer-overflow,object-size
         -DMOEKD_CUDA=OFF -DMOEKD_BUILD_BENCH=OFF -DMOEKD_BUILD_EXAMPLES=OFF -DMOEKD_MPI=OFF -DMOEKD_DOC_SNIPPETS=OFF)
  # consumer builds, fuzzers (sanitised by clang themselves) and GPU tests add nothing here;
  # mpirun tests: Open MPI's own allocations read as leaks under LeakSanitizer (the collectives'
  # single-process logic still runs here, in the Catch2 tests), so MPI is not built here at all;
  # the device-kit configure (kit) is a cmake run, nothing to sanitise. The docs' snippet programs
  # are built and run in the release pass (here only their Python checks run). The emulated-CUDA tests
  # (emu) do run here: the sanitiser is what catches a kernel indexing past its buffer.
  CTEST_ARGS=(-LE 'consumer|fuzz|gpu|example|mpi|kit')
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  BUILD=build
  EXTRA=(-DCMAKE_BUILD_TYPE=Release)
  CTEST_ARGS=()
fi
JOBS="${MOEKD_JOBS:-$(nproc)}"
# Without a GPU the real-GPU test programs would only report "skipped": build just gpu_test (the
# link check); every kernel still runs here on the emulated device (emu/, the *_emu tests).
if nvidia-smi -L > /dev/null 2>&1; then GPU_TESTS=ON; else GPU_TESTS=OFF; fi
EXTRA+=(-DMOEKD_GPU_TESTS=$GPU_TESTS)

cmake -S . -B "$BUILD" -G Ninja "${EXTRA[@]}" -DMOEKD_TESTS_ONLY= -DMOEKD_OP_CASES_ONLY= -DMOEKD_REQUIRE_SENTENCEPIECE=ON
cmake --build "$BUILD" -j "$JOBS"
# ctest runs $JOBS tests at once, so each gets one thread unless it sets its own (the threading
# tests do): two 2-thread tests on 2 cores spin in OpenBLAS's and our pools' waits (the ones_vit
# smoke test beside one busy core: 104 s at 2 threads, 88 s of it system time; 30 s at 1).
export MOEKD_NUM_THREADS="${MOEKD_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" \
       OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" "${CTEST_ARGS[@]}"
