#!/usr/bin/env bash
# Installs Debian's `chromium` (for the demo inbox's browser test) when
# /usr/bin/chromium is missing. Needs root, or sudo without a password, and the
# Debian package sources; says what is missing otherwise.
#   scripts/install-chromium.sh
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-chromium: /usr/bin/chromium is missing and this machine has no apt-get;" \
    "install Chromium so that /usr/bin/chromium runs it" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "install-chromium: /usr/bin/chromium is missing; run as root:" \
    "apt-get install -y --no-install-recommends chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
install() { "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >>"$log" 2>&1; }
echo "install-chromium: installing Debian's chromium with apt-get" >&2
# A fresh container has no package lists; an old list may name files the mirror no
# longer has. Either way, update once and try again.
if ! install; then
  if ! "${as_root[@]}" apt-get update -q >>"$log" 2>&1 || ! install; then
    cat "$log" >&2
    echo "install-chromium: apt-get could not install chromium (its output is above)" >&2
    exit 1
  fi
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "install-chromium: apt-get installed chromium, but /usr/bin/chromium is not there" >&2
  exit 1
fi
