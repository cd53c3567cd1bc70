#!/usr/bin/env bash
# Makes the tokenmill .deb with cpack from a configured build whose tokenmilld
# and tokenmill are built (cpack does not build), and prints its path. When
# the OpenCL plugin is built too, tokenmill-opencl's .deb lands next to it in
# OUT_DIR.
#   packaging/build-deb.sh BUILD_DIR OUT_DIR
# cpack's staging (_CPack_Packages) goes under OUT_DIR too (-B), so the build
# directory is left as it was. Errors go to stderr with cpack's log; exit 1.
set -euo pipefail
build_dir=$1
out_dir=$2
if [[ ! -f $build_dir/CPackConfig.cmake ]]; then
  echo "build-deb.sh: $build_dir/CPackConfig.cmake missing: configure the build first" >&2
  exit 1
fi
mkdir -p "$out_dir"
if ! cpack --config "$build_dir/CPackConfig.cmake" -G DEB -B "$out_dir" >"$out_dir/cpack.log" 2>&1; then
  cat "$out_dir/cpack.log" >&2
  echo "build-deb.sh: cpack failed (are tokenmilld and tokenmill built?)" >&2
  exit 1
fi
shopt -s nullglob
debs=("$out_dir"/tokenmill_*.deb)
shopt -u nullglob
if [[ ${#debs[@]} -ne 1 ]]; then
  echo "build-deb.sh: expected one .deb in $out_dir, got: ${debs[*]:-none}" >&2
  exit 1
fi
echo "${debs[0]}"
