#!/usr/bin/env bash
# run_default.sh — the README's main-job command: install what is missing, build, and run the
# translation example (TSJT) on its built-in default: real human translations from the gettext
# catalogs of a fixed list of Debian packages (downloaded once with apt-get download into
# build/gettext-catalogs, unpacked with dpkg-deb, so the corpus does not depend on what happens to
# be installed). Single vs ConstJT vs TSJT on fr, fi, hi <-> en; prints the BLEU table.
# Extra arguments go to tsjt_wmt (e.g. --max-steps 200, --langs fr,de).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target tsjt_wmt -j "$(nproc)"
catalogs=build/gettext-catalogs
if UNPACK_ONLY=1 scripts/build_gettext_corpus.sh "$catalogs"; then
  root="$catalogs/root"
else
  root=/usr/share/locale
  echo "run_default: could not download the catalog packages; using the catalogs installed in $root" >&2
fi
exec ./build/examples/tsjt_wmt/tsjt_wmt --catalogs "$root" "$@"
