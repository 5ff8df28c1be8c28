#!/usr/bin/env bash
# pack_device_kit.sh — copies what the CUDA test build needs from this Debian bookworm machine
# into one folder, so that the GPU machine (nvcc, CMake, ninja, no Debian dev packages, no
# network) can build the gpu tests from the working tree alone: scripts/gpu_check.sh configures
# against this folder and nothing else (docs/device_kit.md). Run it here, then hand the folder
# to the device tool as carry [".device-kit"].
#
#   scripts/pack_device_kit.sh [DIR]      default DIR: $MOEKD_KIT_DIR, else <repo>/.device-kit
#
# The kit (a prefix CMake can search):
#   include/eigen3/Eigen, share/eigen3/cmake   Eigen 3.4 headers (no unsupported/) + its config
#   include/catch2, lib/cmake/Catch2           Catch2 v2 single header + its config and Catch.cmake
#   include/nlohmann, share/cmake/nlohmann_json  nlohmann/json headers + its config (io/json.hpp)
#   include/zlib.h, zconf.h, lib/libz.so*      zlib (the top level does find_package(ZLIB REQUIRED))
#   lib/libopenblas.so*                        OpenBLAS (pthread build), with the shared libraries it
#                                              needs beyond glibc / libgcc_s (libgfortran, libquadmath)
# Not in it: CLI11 and SentencePiece (only the examples and the tokenizer test use them; the GPU
# build has examples OFF and skips the tokenizer test), Open MPI (MOEKD_MPI=OFF there).
# Idempotent: DIR is wiped and recreated. Fails if anything is missing or the kit is over 48 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

KIT="${1:-${MOEKD_KIT_DIR:-$PWD/.device-kit}}"
MAX_BYTES=$((48 * 1024 * 1024))
LIBDIR=/usr/lib/x86_64-linux-gnu

die() { echo "pack_device_kit.sh: $*" >&2; exit 1; }
need() { [ -e "$1" ] || die "missing $1 (run scripts/deps.sh first)"; }

for f in /usr/include/eigen3/Eigen/Core /usr/share/eigen3/cmake/Eigen3Config.cmake \
         /usr/include/catch2/catch.hpp /usr/lib/cmake/Catch2/Catch2Config.cmake \
         /usr/include/zlib.h "$LIBDIR/libz.so" "$LIBDIR/libopenblas.so" \
         /usr/include/nlohmann/json.hpp /usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake; do
  need "$f"
done
command -v objdump >/dev/null || die "objdump (binutils) is required"

case "$KIT" in /|/usr|/usr/*|"$HOME"|"$PWD"|.) die "refusing to wipe $KIT" ;; esac
rm -rf "$KIT"
mkdir -p "$KIT/include" "$KIT/lib/cmake" "$KIT/share/eigen3"

# copy_lib SRC: the real file (symlinks followed) under its SONAME, plus the unversioned
# link-time name as a relative symlink (it travels as a link inside the carried folder).
copy_lib() {
  local src=$1 real soname dev
  real=$(readlink -f "$src")
  soname=$(objdump -p "$real" | awk '$1 == "SONAME" { print $2 }')
  [ -n "$soname" ] || soname=$(basename "$src")
  cp "$real" "$KIT/lib/$soname"
  dev=$(basename "$src")
  dev=${dev%%.so*}.so
  [ "$dev" = "$soname" ] || ln -sfn "$soname" "$KIT/lib/$dev"
}

# Eigen: headers without unsupported/ (moekd does not use it; 2.7 MB saved), and Debian's
# config, which finds the headers relative to itself (share/eigen3/cmake -> ../../../include/eigen3).
mkdir -p "$KIT/include/eigen3"
cp -r /usr/include/eigen3/Eigen /usr/include/eigen3/signature_of_eigen3_matrix_library "$KIT/include/eigen3/"
cp -r /usr/share/eigen3/cmake "$KIT/share/eigen3/"

# Catch2 v2: the headers and the CMake files, less Catch2Targets-none.cmake (it imports
# libCatch2WithMain.a, which our tests do not use: they have their own main).
cp -r /usr/include/catch2 "$KIT/include/"
mkdir -p "$KIT/lib/cmake/Catch2"
for f in /usr/lib/cmake/Catch2/*.cmake; do
  case "$f" in *Targets-*.cmake) continue ;; esac
  cp "$f" "$KIT/lib/cmake/Catch2/"
done

# nlohmann/json: the headers and Debian's config, which finds them relative to itself
# (share/cmake/nlohmann_json -> ../../../include)
cp -r /usr/include/nlohmann "$KIT/include/"
mkdir -p "$KIT/share/cmake"
cp -r /usr/share/cmake/nlohmann_json "$KIT/share/cmake/"

# zlib
cp /usr/include/zlib.h /usr/include/zconf.h "$KIT/include/"
copy_lib "$LIBDIR/libz.so"

# OpenBLAS (libopenblas.so -> /etc/alternatives -> openblas-pthread/libopenblasp-r0.3.21.so) and
# what it loads that a GPU machine may lack; glibc, libgcc_s and libstdc++ come with its compiler.
copy_lib "$LIBDIR/libopenblas.so"
for dep in $(ldd "$(readlink -f "$LIBDIR/libopenblas.so")" | awk '$2 == "=>" { print $3 }'); do
  case "$(basename "$dep")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
    *) cp "$(readlink -f "$dep")" "$KIT/lib/$(basename "$dep")" ;;
  esac
done

{
  echo "moekd device kit, packed $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) by scripts/pack_device_kit.sh"
  dpkg-query -W -f='${Package} ${Version}\n' libeigen3-dev catch2 nlohmann-json3-dev zlib1g-dev libopenblas0-pthread libgfortran5 2>/dev/null || true
} >"$KIT/MANIFEST.txt"

bytes=$(du -sb "$KIT" | cut -f1)
echo "pack_device_kit.sh: $KIT: $((bytes / 1024)) KiB ($(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB)"
ls -l "$KIT/lib"
[ "$bytes" -le "$MAX_BYTES" ] || die "kit is $bytes bytes, over the 48 MiB limit"
