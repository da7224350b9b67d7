#!/usr/bin/env bash
# Prepares the friends user function written against the original Cloudstate
# JavaScript library (friends-js/) so that tests can run it: installs protoc
# and the well-known protos from Debian when missing, installs the pinned npm
# packages, puts protoc where the library looks for it, and compiles the
# descriptor set the library serves. Safe to run again; quick when nothing
# changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fn="$here/friends-js"
repo="$(cd "$here/../.." && pwd)"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "setup.sh: $tool not found; install Node.js 20" >&2
    exit 1
  fi
done

# protoc, and the well-known protos the library also reads at run time.
wkt_dir() { echo "$(dirname "$(dirname "$(command -v protoc)")")/include"; }
if ! command -v protoc >/dev/null || [ ! -f "$(wkt_dir)/google/protobuf/any.proto" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: protoc missing; as root run: apt-get install" \
      "--no-install-recommends protobuf-compiler libprotobuf-dev" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
fi
include="$(wkt_dir)"

# npm ci only when the lock file or the grpc stand-in changed since the last run.
stamp="$fn/node_modules/.setup-stamp"
want="$(cat "$fn/package.json" "$fn/package-lock.json" "$fn"/grpc-shim/* | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # Scripts stay off: the library's install step downloads protoc from GitHub.
  (cd "$fn" && npm ci --ignore-scripts --no-audit --no-fund)
  echo "$want" >"$stamp"
fi

protoc_dir="$fn/node_modules/cloudstate/protoc"
mkdir -p "$protoc_dir/bin" "$protoc_dir/include/google"
ln -sfn "$(command -v protoc)" "$protoc_dir/bin/protoc"
ln -sfn "$include/google/protobuf" "$protoc_dir/include/google/protobuf"

protoc --include_imports \
  --proto_path="$repo/proto" --proto_path="$include" \
  --descriptor_set_out="$fn/user-function.desc.tmp" \
  cloudstate/samples/chat/friends/friends.proto
mv "$fn/user-function.desc.tmp" "$fn/user-function.desc"
