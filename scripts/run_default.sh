#!/usr/bin/env bash
# run_default.sh — the README's main-job command: install what is missing, build, and run the
# main example on its built-in default (real data from Debian packages). Extra arguments go to
# the example program.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target fashion_mlp -j "$(nproc)"
exec ./build/examples/fashion_mlp "$@"
