#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine: redis-server (the Redis store's
# conformance tests run against a real server on a loopback port), chromium (the dashboard test),
# promtool (the alert rules' tests) and real Ollama, built from the Go module proxy into a cache
# outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
# apt_install CMD PACKAGE: installs the Debian package unless CMD is already on PATH.
apt_install() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "test-deps: installing $2" >&2
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2 \
    || { $sudo_cmd apt-get update -qq >&2 && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2; }
}
apt_install redis-server redis-server
# The dashboard is checked in a real headless browser (cmd/herd/operator_test.go).
apt_install chromium chromium
# promtool checks and unit-tests the shipped alert rules (deploy/prometheus); the Debian package
# `prometheus` provides it.
apt_install promtool prometheus
scripts/build-ollama.sh >/dev/null
