#!/usr/bin/env bash
# Opt-in set-up for the browser test (tests/test_site_browser.py, marker `browser`): Debian's Chromium, installed with
# apt-get as root (about a minute). The tests never install anything themselves; without Chromium that test skips.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    echo "setup-browser: chromium is installed ($(command -v chromium || echo /usr/bin/chromium))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-browser: chromium is missing and this needs root and apt-get: apt-get update && apt-get install -y" \
         "chromium chromium-driver" >&2
    exit 1
fi
echo "setup-browser: installing Debian's chromium (about a minute)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver > /dev/null
echo "setup-browser: installed $(command -v chromium)"
