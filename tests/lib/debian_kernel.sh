#!/usr/bin/env bash
# Prints the path of a stock Debian kernel (bzImage) for the Linux-boot tests, downloading
# the newest linux-image-<ver>-amd64 package from the configured Debian mirror into CACHE_DIR
# (default: a directory under the system temp dir) on first use. Nothing is ever committed.
# Exit 0 with the path on stdout; exit 77 when the mirror cannot be reached (tests skip and
# say so); exit 1 on any other failure.
set -uo pipefail
cache=${1:-${TMPDIR:-/tmp}/godwit-kernel-cache}
mkdir -p "$cache" || exit 1
found=$(ls "$cache"/x/boot/vmlinuz-* 2>/dev/null | head -n1)
if [ -n "$found" ]; then echo "$found"; exit 0; fi
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$pkg" ]; then
  echo "debian_kernel.sh: apt knows no linux-image-amd64 (run apt-get update?)" >&2
  exit 77
fi
tmp=$(mktemp -d "$cache/dl.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>"$tmp/log"); then
  echo "debian_kernel.sh: the Debian mirror is unreachable (apt-get download $pkg failed):" >&2
  grep -v '^W:' "$tmp/log" | tail -n 3 >&2
  exit 77
fi
dpkg-deb -x "$tmp"/*.deb "$tmp/x" || exit 1
rm -rf "$cache/x" && mv "$tmp/x" "$cache/x" || exit 1
ls "$cache"/x/boot/vmlinuz-* | head -n1
