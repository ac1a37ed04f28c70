#!/usr/bin/env bash
# System tools the tests drive: Chromium (browser test of the web page) and Debian's docker-compose
# (validates docker-compose.yml without a Docker engine). Installs only what is missing.
set -euo pipefail
missing=()
command -v chromium > /dev/null || missing+=(chromium)
command -v docker-compose > /dev/null || missing+=(docker-compose)
command -v wrk > /dev/null || missing+=(wrk)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo > /dev/null; then
  echo "missing ${missing[*]}: install them with your package manager (need root)" >&2; exit 1
fi
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
echo "installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
