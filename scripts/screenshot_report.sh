#!/usr/bin/env bash
# Screenshot of a qevo report page in headless Chromium (Debian: apt-get install chromium),
# for looking at what a person sees: scripts/screenshot_report.sh REPORT.html OUT.png [WIDTH HEIGHT]
# The page is self-contained, so it is loaded from disk with networking off.
set -euo pipefail
page=${1:?usage: screenshot_report.sh REPORT.html OUT.png [WIDTH HEIGHT]}
out=${2:?usage: screenshot_report.sh REPORT.html OUT.png [WIDTH HEIGHT]}
width=${3:-1200}
height=${4:-4000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "no chromium found: apt-get install chromium" >&2
    exit 2
fi
abs_page=$(cd "$(dirname "$page")" && pwd)/$(basename "$page")
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: CI and these machines run as root, where Chromium's sandbox refuses to start.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --no-first-run --disable-extensions \
    --proxy-server='127.0.0.1:9' --proxy-bypass-list='<-loopback>' \
    --window-size="$width,$height" --screenshot="$abs_out" "file://$abs_page" 2>/dev/null
test -s "$abs_out"
echo "wrote $abs_out (${width}x${height})"
