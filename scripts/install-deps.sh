#!/usr/bin/env bash
# Installs everything the engine, its tests and benchmarks need on a fresh Debian 12 machine.
# Idempotent: packages already present are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

DEB_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  clang libclang-rt-14-dev  # scripts/fuzz.sh: clang++ and its libFuzzer runtime
  clang-format              # scripts/check-format.sh (CI)
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
  libsqlite3-dev libhiredis-dev libssl-dev
  libjemalloc-dev           # the engine binary's allocator (release builds)
  libgtest-dev libgmock-dev libbenchmark-dev
  redis-server              # Redis tests (unit and system) start their own; brings redis-cli and redis-benchmark
  openssl                   # the Redis TLS unit test makes a self-signed certificate
  librabbitmq-dev rabbitmq-server  # iii-queue's rabbitmq adapter and its tests
  chromium                  # tests/system/node/rbac_browser.test.mjs: a real browser (headless)
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Official SDKs for the compatibility tests (pinned versions).
if [ "${SKIP_SDK_DEPS:-0}" != 1 ]; then
  if [ -f tests/system/node/package.json ]; then
    (cd tests/system/node && npm ci --no-audit --no-fund --loglevel=error 2>/dev/null || npm install --no-audit --no-fund --loglevel=error)
  fi
  if [ -f tests/system/python/requirements.txt ]; then
    python3 -m pip install -q --disable-pip-version-check -r tests/system/python/requirements.txt
  fi
fi
