#!/usr/bin/env bash
# deps.sh — installs the Debian packages moekd builds and tests with (only the missing ones).
# Needs root (apt-get); everything comes from Debian's registry, nothing else is downloaded.
set -euo pipefail

PKGS=(
  cmake ninja-build g++ pkg-config
  libeigen3-dev libopenblas-dev libopenblas0-pthread   # CPU math, GEMM through OpenBLAS
  catch2 libcli11-dev zlib1g-dev                       # tests, command lines, gzip'd data
  nlohmann-json3-dev                                   # JSON of file headers and configs (io/json.hpp)
  libdnnl-dev                                          # oneDNN: bf16 matrix products (core/precision.hpp)
  ocl-icd-opencl-dev                                   # OpenCL, which Debian's dnnl-config.cmake requires
  dataset-fashion-mnist                                # real data for the default job
  python3-torch libtorch-dev                           # the reference we check against / race
  clang libclang-rt-14-dev                             # libFuzzer for the file-format fuzzers
  libsentencepiece-dev sentencepiece                   # translation example's subword tokenizer
  libopenmpi-dev openmpi-bin                           # multi-process training on CPU (dist/)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python tools from PyPI for the interop tests (the `safetensors` reference implementation,
# sacreBLEU, and scikit-learn / SciPy for the downstream metrics).
# They go to the `python3` on PATH; Debian's /usr/bin/python3 is the one with python3-torch.
if ! python3 -c "import safetensors.numpy, numpy, sacrebleu, sklearn, scipy" 2>/dev/null; then
  echo "deps.sh: pip install safetensors numpy sacrebleu scikit-learn scipy"
  python3 -m pip install -q --disable-pip-version-check safetensors numpy sacrebleu scikit-learn scipy 2>&1 | grep -v "WARNING: Running pip as" || true
fi

# transformers (PyPI) for tests/hf_interop, into Debian's /usr/bin/python3 beside python3-torch
# (--break-system-packages: pip puts it under /usr/local; it replaces no Debian package, torch and
# numpy stay Debian's). Pinned: from 4.48 on transformers needs torch >= 2.0; Debian's is 1.13.
if ! /usr/bin/python3 -c "import transformers, safetensors.torch" 2>/dev/null; then
  echo "deps.sh: pip install transformers==4.47.1 (for /usr/bin/python3)"
  /usr/bin/python3 -m pip --version > /dev/null 2>&1 || { ${SUDO:-} apt-get update -qq && DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq --no-install-recommends python3-pip >/dev/null; }
  /usr/bin/python3 -m pip install -q --disable-pip-version-check --break-system-packages "transformers==4.47.1" 2>&1 | grep -v "WARNING: Running pip as" || true
fi
