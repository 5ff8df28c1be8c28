#!/usr/bin/env bash
# build_tcd_corpus.sh — unpacks the English text of the TCD example (issue 7) from Debian
# packages (../shared/DATA.md), so the result never depends on what is installed here.
#
#   scripts/build_tcd_corpus.sh OUT_DIR
#
# 1. `apt-get download`s the packages into OUT_DIR/debs, reusing .deb files already there
#    (a cache: delete it to refresh);
# 2. unpacks each with `dpkg-deb -x` into a fresh OUT_DIR/root;
# 3. prints what it made. The example (examples/tcd_bert/english.hpp) reads:
#      OUT_DIR/root/usr/share/wordnet        WordNet 3.0 data.{noun,verb,adj,adv}  (wordnet-base)
#      OUT_DIR/root/usr/share/games/fortunes fortune category files          (fortunes, fortunes-min)
#    and, for out-of-distribution masked-LM evaluation (read_ood_text):
#      OUT_DIR/root/usr/include              C headers, domain "code"         (libc6-dev)
#      OUT_DIR/root/usr/share/locale         gettext catalogs, "ui"  (tar grep sed diffutils findutils)
#      OUT_DIR/root/usr/share/doc/git-doc    git's AsciiDoc manuals, "prose"  (git-doc)
# Running it again re-extracts from the cache (idempotent).
set -euo pipefail

if [[ $# -ne 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
PACKAGES=(wordnet-base fortunes fortunes-min libc6-dev tar grep sed diffutils findutils git-doc)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
# shellcheck source=scripts/lib/unpack_debs.sh
source "$(dirname "$0")/lib/unpack_debs.sh"
unpack_debs build_tcd_corpus "$OUT" "${PACKAGES[@]}"

# 3. report
R=$OUT/root
for f in data.noun data.verb data.adj data.adv; do
  [[ -s "$R/usr/share/wordnet/$f" ]] || { echo "build_tcd_corpus: $R/usr/share/wordnet/$f missing" >&2; exit 1; }
done
[[ -d "$R/usr/share/games/fortunes" ]] || { echo "build_tcd_corpus: no fortunes directory" >&2; exit 1; }
count_files() { find "$1" -type f -name "$2" 2>/dev/null | wc -l; }
synsets=$(cat "$R"/usr/share/wordnet/data.{noun,verb,adj,adv} | grep -vc '^  ' || true)
cats=$(find "$R/usr/share/games/fortunes" -maxdepth 1 -type f ! -name '*.*' | wc -l)
entries=$(find "$R/usr/share/games/fortunes" -maxdepth 1 -type f ! -name '*.*' -exec cat {} + | grep -c '^%$' || true)
echo "TCD corpus unpacked into $R"
printf '  %-40s %s\n' "usr/share/wordnet" "$synsets synsets (WordNet 3.0)"
printf '  %-40s %s\n' "usr/share/games/fortunes" "$cats categories, ~$entries fortunes"
printf '  %-40s %s\n' "usr/include (ood: code)" "$(count_files "$R/usr/include" '*.h') C headers"
printf '  %-40s %s\n' "usr/share/locale (ood: ui)" "$(count_files "$R/usr/share/locale" '*.mo') gettext catalogs"
printf '  %-40s %s\n' "usr/share/doc/git-doc (ood: prose)" "$(count_files "$R/usr/share/doc/git-doc" '*.txt') text files"
