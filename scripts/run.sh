#!/usr/bin/env bash
# Fresh machine to running engine: installs dependencies, builds, starts `iii` with its
# embedded defaults (worker WebSocket on 0.0.0.0:49134). Extra arguments go to `iii`.
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP_SDK_DEPS=1 ./scripts/install-deps.sh
./scripts/build.sh release --target iii
exec ./build/release/iii "$@"
