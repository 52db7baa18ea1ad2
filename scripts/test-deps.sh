#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine: redis-server (the Redis store's
# conformance tests run against a real server on a loopback port) and real Ollama, built from the
# Go module proxy into a cache outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "test-deps: installing redis-server" >&2
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >&2 \
    || { $sudo_cmd apt-get update -qq >&2 && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >&2; }
fi
scripts/build-ollama.sh >/dev/null
