#!/usr/bin/env bash
# Regenerate src/podrt/api from proto/api.proto with betterproto.
# Needs the 'proto' extra: pip install -e '.[proto]'
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
bin=$(dirname "$py")
rm -rf "$here/src/podrt/api"
mkdir -p "$here/src/podrt/api"
PATH="$bin:$PATH" "$py" -m grpc_tools.protoc -I"$here/proto" \
    --python_betterproto_out="$here/src/podrt/api" "$here/proto/api.proto"
