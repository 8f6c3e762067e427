#!/bin/sh
# Install Debian's headless-capable `chromium` (and a font, so text renders) for tests/test_browser.py.
# Does nothing when `chromium` is already on PATH; exits non-zero when it cannot install.
set -eu

if command -v chromium >/dev/null 2>&1; then
    echo "install_browser: $(command -v chromium) already present"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: chromium is not on PATH and apt-get is missing; install Debian's chromium by hand" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: chromium is not on PATH; run as root (or: sudo apt-get install chromium fonts-dejavu-core)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; then
    echo "install_browser: apt-get could not install chromium" >&2
    exit 1
fi
command -v chromium >/dev/null 2>&1 || { echo "install_browser: chromium still not on PATH after install" >&2; exit 1; }
echo "install_browser: installed $(chromium --version 2>/dev/null || echo chromium)"
