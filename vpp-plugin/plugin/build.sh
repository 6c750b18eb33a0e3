#!/usr/bin/env bash
# Builds the VPP plugin where VPP's development files are installed; anywhere else it says
# so plainly and succeeds, so CI (hw-lab/test-all.sh) can call it unconditionally.
#
#   vpp-plugin/plugin/build.sh            # → $CARGO_TARGET_DIR/vpp-plugin/lib/vpp_plugins/cvlan_plugin.so
#   CVLAN_PLUGIN_BUILD_DIR=/tmp/b vpp-plugin/plugin/build.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if ! { pkg-config --exists vpp 2>/dev/null || [ -e /usr/include/vnet/vnet.h ]; }; then
  echo "VPP development files not found: skipping the VPP plugin build"
  exit 0
fi
for tool in cmake cargo; do
  command -v "$tool" >/dev/null || { echo "vpp plugin: $tool is required" >&2; exit 1; }
done

target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target=$repo/$target ;; esac
build=${CVLAN_PLUGIN_BUILD_DIR:-$target/vpp-plugin}

(cd "$repo" && cargo build --release -p cvlan-fastpath)
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCVLAN_FASTPATH_LIB="$target/release/libcvlan_fastpath.a"
cmake --build "$build" -j "$(nproc)"
so=$(find "$build" -name cvlan_plugin.so -print -quit)
[ -n "$so" ] || { echo "vpp plugin: cvlan_plugin.so was not produced" >&2; exit 1; }
echo "built $so"
