#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine: redis-server (the Redis store's
# conformance tests run against a real server on a loopback port), Node.js and npm (the JS client
# suite), and real Ollama, built from the Go module proxy into a cache outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "test-deps: installing redis-server" >&2
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >&2 \
    || { $sudo_cmd apt-get update -qq >&2 && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >&2; }
fi
# Node.js and npm run the client compatibility suite (clients/js, cmd/herd TestNodeClients); it
# needs the Node.js major version in clients/js/package.json's engines (Debian 13's nodejs has it).
need_node=()
command -v node >/dev/null 2>&1 || need_node+=(nodejs)
command -v npm >/dev/null 2>&1 || need_node+=(npm)
if [ ${#need_node[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "test-deps: installing ${need_node[*]}" >&2
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_node[@]}" >&2 \
    || { $sudo_cmd apt-get update -qq >&2 && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_node[@]}" >&2; }
fi
want_node=$(sed -n 's/.*"node": *">= *\([0-9]*\).*/\1/p' clients/js/package.json)
have_node=$(node --version 2>/dev/null | sed 's/^v\([0-9]*\).*/\1/')
if [ -n "$want_node" ] && [ "${have_node:-0}" -lt "$want_node" ]; then
  echo "test-deps: node ${have_node:-missing} is older than the $want_node the client suite needs (clients/js); install a newer nodejs" >&2
fi
scripts/build-ollama.sh >/dev/null
