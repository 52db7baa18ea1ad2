#!/usr/bin/env bash
# Builds versitygw (an S3 server, Apache-2.0, with a posix backend over a directory) from the Go
# module proxy into a cache outside the repository, for the tests of bulk file contents in S3
# (--files-url). Prints the binary's path on stdout. Idempotent: a cached binary is reused.
# Cold, `go install` takes about 2.5 minutes on a 2-core machine; cached, nothing.
set -euo pipefail

version="${HERD_VERSITYGW_VERSION:-1.8.0}"
cache="${HERD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herd}"
bin="$cache/versitygw-$version/versitygw"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"; exit 0
fi
mkdir -p "$cache/versitygw-$version"
echo "build-versitygw: building versitygw $version (a few minutes cold)" >&2
# Outside any module, so that go install uses versitygw's own go.mod.
(cd "$cache" && GOBIN="$cache/versitygw-$version" go install "github.com/versity/versitygw/cmd/versitygw@v$version" >&2)
"$bin" --version >&2
echo "$bin"
