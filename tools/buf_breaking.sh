#!/usr/bin/env bash
# buf breaking against the previous commit of main (or main itself when HEAD is not main).
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf
if ! git rev-parse --verify -q main >/dev/null; then
  echo "buf breaking: no main branch here; skipped"
  exit 0
fi
if [ "$(git rev-parse HEAD)" = "$(git rev-parse main)" ]; then
  against="main~1"
else
  against="main"
fi
if ! git rev-parse --verify -q "$against" >/dev/null; then
  echo "buf breaking: $against does not exist (first commit); skipped"
  exit 0
fi
# A commit from before protos/ existed has nothing to break.
if ! git cat-file -e "$against:protos" 2>/dev/null; then
  echo "buf breaking: $against has no protos/; skipped"
  exit 0
fi
"$buf" breaking --against ".git#ref=$(git rev-parse "$against"),subdir=protos"
echo "buf breaking: no breaking changes against $against"
