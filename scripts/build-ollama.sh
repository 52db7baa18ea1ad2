#!/usr/bin/env bash
# Builds real Ollama from the Go module proxy into a cache outside the repository, so the tests can
# run the Ollama backend against the real server with a model the tests generate themselves.
# Prints the binary's path on stdout. Idempotent: a cached binary is reused.
#
# The module zip leaves out llama.cpp's vendored headers; nlohmann-json and stb come from Debian,
# and miniaudio.h from the malgo Go module (it ships that single header).
set -euo pipefail

version="${HERD_OLLAMA_VERSION:-0.17.4}"
cache="${HERD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herd}"
bin="$cache/ollama-$version/ollama"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"; exit 0
fi

need_pkgs=()
[ -f /usr/include/nlohmann/json.hpp ] || need_pkgs+=(nlohmann-json3-dev)
[ -f /usr/include/stb/stb_image.h ] || need_pkgs+=(libstb-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "build-ollama: installing ${need_pkgs[*]}" >&2
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2 \
    || { $sudo_cmd apt-get update -qq >&2 && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# go mod download needs a module context that is not ours (ours does not require malgo).
(cd "$work" && go mod init herd-ollama-build >/dev/null 2>&1 && go mod download -json github.com/gen2brain/malgo@v0.11.24 > malgo.json)
malgo_dir=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' "$work/malgo.json")
mkdir -p "$work/inc/miniaudio"
cp "$malgo_dir/miniaudio.h" "$work/inc/miniaudio/miniaudio.h"

mkdir -p "$cache/ollama-$version"
echo "build-ollama: building ollama $version (CPU only; several minutes cold)" >&2
GOBIN="$cache/ollama-$version" CGO_ENABLED=1 CGO_CPPFLAGS="-I$work/inc -I/usr/include/stb" \
  go install -ldflags "-X github.com/ollama/ollama/version.Version=$version" "github.com/ollama/ollama@v$version" >&2
"$bin" --version >&2 || true
echo "$bin"
