# shellcheck shell=bash
# kit_configure.sh — sourced by scripts/gpu_check.sh and tests/kit/kit_configure_test.sh: the one
# CMake configure of the GPU test build, which finds its dependencies in the device kit
# (scripts/pack_device_kit.sh) and nowhere else, so that a configure that works here against the
# kit works on the GPU machine, which has no Debian dev packages.
#
#   kit_configure KIT BUILD_DIR CUDA(ON|OFF) ARCH [extra cmake args...]
#   (KIT_CONFIGURE_TIMEOUT=<seconds> bounds the cmake run)
#
# Run from the repository root. Isolation: CMAKE_PREFIX_PATH is the kit alone; CMake's system
# prefixes (/usr, /usr/local, /, the install prefix) and the CMAKE_PREFIX_PATH & co. environment
# variables are not searched; the prefixes derived from PATH (/usr/bin -> /usr) are ignored; no
# package registries; no pkg-config (its .pc files name system paths: SentencePiece falls back to
# find_path / find_library, which are isolated, and is not found). The CUDA toolkit is still found
# from nvcc's own location (FindCUDAToolkit's hints); the compilers' own paths stay as they are.
kit_configure() {
  local kit build cuda arch nvcc
  kit=$(cd "$1" && pwd) build=$2 cuda=$3 arch=$4
  shift 4
  local args=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
    -DMOEKD_BUILD_TESTS=ON -DMOEKD_BUILD_EXAMPLES=OFF -DMOEKD_BUILD_BENCH=ON -DMOEKD_MPI=OFF
    -DMOEKD_TESTS_ONLY= -DMOEKD_OP_CASES_ONLY= -DMOEKD_REQUIRE_SENTENCEPIECE=OFF
    "-DCMAKE_PREFIX_PATH=$kit"
    -DCMAKE_FIND_USE_CMAKE_SYSTEM_PATH=OFF -DCMAKE_FIND_USE_CMAKE_ENVIRONMENT_PATH=OFF
    "-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local;/"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
    -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON
    -DMOEKD_BLAS=ON "-DMOEKD_CUDA=$cuda")
  if [ "$cuda" = ON ]; then
    nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    args+=("-DCMAKE_CUDA_COMPILER=$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=$arch")
  fi
  ${KIT_CONFIGURE_TIMEOUT:+timeout "$KIT_CONFIGURE_TIMEOUT"} cmake "${args[@]}" "$@"
}

# kit_env KIT: the kit's shared libraries (OpenBLAS, libgfortran, zlib) for the built programs.
kit_env() {
  local lib
  lib="$(cd "$1" && pwd)/lib"
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
