#!/usr/bin/env bash
# Fails when a C++ file under src/, sdk/, bench/ or fuzz/ is not clang-format clean
# (.clang-format at the root; Debian 12's clang-format, version 14).
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT="${CLANG_FORMAT:-clang-format}"
git ls-files 'src/*.cc' 'src/*.h' 'sdk/*.cc' 'sdk/*.h' 'bench/*.cc' 'bench/*.h' 'fuzz/*.cc' 'fuzz/*.h' |
  xargs "$CLANG_FORMAT" --dry-run -Werror
echo "check-format: clean ($("$CLANG_FORMAT" --version))"
