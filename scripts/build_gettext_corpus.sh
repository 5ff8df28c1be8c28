#!/usr/bin/env bash
# build_gettext_corpus.sh — builds the translation example's default corpus (issue 5) from the
# human translations in Debian's gettext catalogs (package list: ../shared/DATA.md).
#
#   scripts/build_gettext_corpus.sh OUT_DIR [PACKAGE...]
#
# 1. `apt-get download`s the packages (the fixed list below by default) into OUT_DIR/debs,
#    reusing .deb files already there (a cache: delete it to refresh);
# 2. unpacks every .deb with `dpkg-deb -x` into a fresh OUT_DIR/root, so the result never
#    depends on what happens to be installed on this machine;
# 3. runs prepare_gettext (env PREPARE_GETTEXT, else build*/tools/prepare_gettext), which writes
#    OUT_DIR/<xx>-en/{train,valid,test}.{xx,en} and OUT_DIR/stats.json and prints the table.
# Extra prepare_gettext flags can be passed in PREPARE_FLAGS (e.g. "--valid 0.02 --langs fr,fi").
# UNPACK_ONLY=1 stops after step 2 (tsjt_wmt --catalogs OUT_DIR/root cleans and splits itself).
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

OUT=$1
shift
DEFAULT_PACKAGES=(iso-codes postgresql-15 git binutils-common libgphoto2-l10n libgtk-3-common gnupg-l10n
  coreutils libgtk2.0-common libc-l10n gnucobol3 postgresql-client-15 xkb-data libexif12
  libglib2.0-data dpkg procps shared-mime-info gettext libdpkg-perl login apt tar grep sed
  findutils diffutils wget bash-completion util-linux-locales gcc-12-locales cpp-12
  e2fsprogs-l10n gimp-data gnome-desktop3-data libgweather-4-common evince-common
  gedit-common nautilus-data gnome-control-center-data)
if [[ $# -gt 0 ]]; then PACKAGES=("$@"); else PACKAGES=("${DEFAULT_PACKAGES[@]}"); fi

here=$(cd "$(dirname "$0")/.." && pwd)
tool=${PREPARE_GETTEXT:-}
if [[ -z "$tool" ]]; then
  for cand in "$here"/build/tools/prepare_gettext "$here"/build*/tools/prepare_gettext; do
    if [[ -x "$cand" ]]; then tool=$cand; break; fi
  done
fi
if [[ "${UNPACK_ONLY:-0}" != 1 && ( -z "$tool" || ! -x "$tool" ) ]]; then
  echo "build_gettext_corpus: prepare_gettext not found; build it (cmake --build build --target prepare_gettext)" >&2
  echo "  or point PREPARE_GETTEXT at it" >&2
  exit 1
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# shellcheck source=scripts/lib/unpack_debs.sh
source "$(dirname "$0")/lib/unpack_debs.sh"
unpack_debs build_gettext_corpus "$OUT" "${PACKAGES[@]}"

if [[ "${UNPACK_ONLY:-0}" == 1 ]]; then
  echo "catalogs unpacked into $OUT/root" >&2
  exit 0
fi

# 3. clean, de-duplicate, split
# shellcheck disable=SC2086
"$tool" --root "$OUT/root" --out "$OUT" ${PREPARE_FLAGS:-}
echo "corpus written to $OUT (<xx>-en/{train,valid,test}.{xx,en}, stats.json)" >&2
