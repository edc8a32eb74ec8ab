#!/usr/bin/env bash
# Regenerates the Python code for proto/** into src/authloyalty/rpc (or the directory given as $1).
# This script is the only thing that writes those files: never edit them by hand.
# tests/unit/test_generated_code.py runs it into a temporary directory and compares.
#
#   scripts/gen_proto.sh            # PYTHON=... to choose the interpreter (default: .venv/bin/python)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
out="${1:-$root/src/authloyalty/rpc}"
proto="$root/proto"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gen="$work/rpc"
mkdir -p "$gen"

# -I proto keeps each descriptor's file name (e.g. "registration.v1/registration.proto"): the
# Confluent schema registry derives the schema name from it, and it must match the original's.
cd "$proto"
"$python" -m grpc_tools.protoc -I . --python_out="$gen" --pyi_out="$gen" \
  registration.v1/registration.proto session.v1/session.proto account.v1/account.proto
"$python" -m grpc_tools.protoc -I . --python_out="$gen" --pyi_out="$gen" \
  --grpc_python_out="$gen" sso/sso.proto

# protoc writes top-level imports ("from sso import sso_pb2"); make them package imports.
find "$gen" -name '*.py' -o -name '*.pyi' | while read -r f; do
  sed -i -E 's/^(from|import) (registration|session|account|sso)([. ])/\1 authloyalty.rpc.\2\3/' "$f"
done

# Every directory becomes a package.
find "$gen" -type d | while read -r d; do
  [ "$d" = "$gen" ] || : > "$d/__init__.py"
done
cat > "$gen/__init__.py" <<'HEADER'
"""Generated from proto/ by scripts/gen_proto.sh. DO NOT EDIT: change the .proto and rerun it.

Modules: registration.v1.registration_pb2, session.v1.session_pb2, account.v1.account_pb2,
sso.sso_pb2, sso.sso_pb2_grpc.
"""
HEADER

rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -R "$gen" "$out"
