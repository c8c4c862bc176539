#!/usr/bin/env bash
# Regenerates forsun/thriftapi/ from forsun.thrift. The generated package is committed and
# never edited by hand: change the IDL and run this script again.
# Needs the Thrift compiler (Debian: apt-get install -y --no-install-recommends thrift-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
thrift --gen py -out "$out" forsun.thrift
rm -rf forsun/thriftapi
# Only the namespaced package is taken: thrift also writes an __init__.py for the parent
# package (forsun/), which must not replace ours.
cp -r "$out/forsun/thriftapi" forsun/thriftapi
rm -f forsun/thriftapi/Forsun-remote
echo "generated forsun/thriftapi from forsun.thrift ($(thrift --version))"
