#!/usr/bin/env bash
# Checks that binaries need no GPU vendor library to start: none of them may
# list libcuda* (libcudart*, libcudnn*), libcublas*, libnvidia*, libnvrtc* or libnvml*
# among its NEEDED entries, since the .deb cannot depend on them and a
# CPU-only node has none. GPU libraries are loaded at run time (dlopen) or
# linked statically. Every NEEDED library must also resolve here (ldd).
#
#   bash tests/packaging/needed_test.sh BINARY...
set -uo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 BINARY..." >&2
  exit 2
fi
if ! command -v readelf >/dev/null; then
  echo "FAIL: readelf not found (binutils)" >&2
  exit 1
fi

gpu_library='^lib(cuda|cublas|nvidia|nvrtc|nvml|cudnn)'
failures=0
for bin in "$@"; do
  if [[ ! -f $bin ]]; then
    echo "  FAIL: $bin does not exist (build it first)"
    failures=$((failures + 1))
    continue
  fi
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]/\1/p')
  if [[ -z $needed ]]; then
    echo "  FAIL: $bin: readelf lists no NEEDED entry (not a dynamic ELF?)"
    failures=$((failures + 1))
    continue
  fi
  gpu=$(grep -E "$gpu_library" <<<"$needed")
  if [[ -n $gpu ]]; then
    echo "  FAIL: $bin needs GPU libraries: $(tr '\n' ' ' <<<"$gpu")"
    failures=$((failures + 1))
  else
    echo "  ok:   $bin needs no GPU library ($(wc -l <<<"$needed") NEEDED entries)"
  fi
  missing=$(ldd "$bin" 2>&1 | grep 'not found')
  if [[ -n $missing ]]; then
    echo "  FAIL: $bin: ldd cannot resolve:"
    while read -r line; do echo "          $line"; done <<<"$missing"
    failures=$((failures + 1))
  fi
done
if [[ $failures -ne 0 ]]; then
  echo "needed test: $failures check(s) failed"
  exit 1
fi
echo "needed test: all checks passed"
