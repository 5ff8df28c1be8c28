# shellcheck shell=bash
# unpack_debs.sh — sourced by the corpus builders: the real data of the examples comes from Debian
# packages, fetched with `apt-get download` and unpacked with `dpkg-deb -x`, so the result never
# depends on what happens to be installed on this machine.
#
#   unpack_debs WHO OUT_DIR PACKAGE...
#
# 1. downloads the packages missing from OUT_DIR/debs (a cache: delete it to refresh);
# 2. unpacks the newest cached version of each into a fresh OUT_DIR/root.
# WHO names the calling script in its error messages.
unpack_debs() {
  local who=$1 out=$2
  shift 2
  local cmd p deb
  for cmd in apt-get dpkg-deb; do
    command -v "$cmd" >/dev/null || { echo "$who: '$cmd' is required (Debian/Ubuntu)" >&2; return 1; }
  done
  mkdir -p "$out/debs"
  local missing=()
  for p in "$@"; do
    if ! compgen -G "$out/debs/${p}_*.deb" >/dev/null; then missing+=("$p"); fi
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "downloading ${#missing[@]} package(s): ${missing[*]}" >&2
    (cd "$out/debs" && apt-get download "${missing[@]}") >&2 || {
      echo "$who: apt-get download failed (network? run 'apt-get update'?)" >&2
      return 1
    }
  fi
  rm -rf "$out/root"
  mkdir -p "$out/root"
  for p in "$@"; do
    local debs=("$out"/debs/"${p}"_*.deb)
    deb=$(printf '%s\n' "${debs[@]}" | sort -V | tail -n 1)  # several cached versions: the newest
    dpkg-deb -x "$deb" "$out/root"
  done
}
