#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine: redis-server (the Redis store's
# conformance tests run against a real server on a loopback port), chromium (the dashboard test),
# promtool (the alert rules' tests), Node.js and npm (the JS client suite), the arm64 cross
# toolchain, qemu-user-static and lintian (make dist's tests) and real Ollama, built from the Go
# module proxy into a cache outside the repository.
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
# Node.js and npm run the client compatibility suite (clients/js, cmd/herd TestNodeClients); it
# needs the Node.js major version in clients/js/package.json's engines (Debian 13's nodejs has it).
apt_install node nodejs
apt_install npm npm
want_node=$(sed -n 's/.*"node": *">= *\([0-9]*\).*/\1/p' clients/js/package.json)
have_node=$(node --version 2>/dev/null | sed 's/^v\([0-9]*\).*/\1/')
if [ -n "$want_node" ] && [ "${have_node:-0}" -lt "$want_node" ]; then
  echo "test-deps: node ${have_node:-missing} is older than the $want_node the client suite needs (clients/js); install a newer nodejs" >&2
fi
# make dist and its tests (cmd/herd-dist): the arm64 cross compiler and C library for the cgo
# build, qemu-user-static to run the arm64 binary, lintian on the packages. systemd-analyze,
# dpkg-deb, unshare and nsenter come with every Debian system.
apt_install aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
[ -f /usr/aarch64-linux-gnu/lib/libc.so.6 ] || apt_install /nonexistent libc6-dev-arm64-cross
apt_install qemu-aarch64-static qemu-user-static
apt_install lintian lintian
scripts/build-ollama.sh >/dev/null
# A real S3 server for the tests of --files-url, built from the Go module proxy into the cache.
scripts/build-versitygw.sh >/dev/null
