#!/usr/bin/env bash
# Installs what building and testing tokenmill needs on Debian 12, from
# Debian's packages only. Idempotent: installs nothing that is already there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates
  libuv1-dev libhttp-parser-dev libabsl-dev prometheus-cpp-dev librocksdb-dev
  libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libsystemd-dev
  libcurl4-openssl-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev libicu-dev
  # zlib: the tokenizer tests read gzip'd Hugging Face tokenizer files.
  zlib1g-dev
  # Tests: a real Prometheus server and promtool; dpkg-dev for the .deb test,
  # lintian and man-db to check it, strace for the unit's system call filter.
  prometheus dpkg-dev systemd man-db lintian strace
  # packaging.kubernetes reads the validated manifests with jq.
  jq
  # Fuzzing (tests/fuzz): clang with libFuzzer and the sanitizer runtimes.
  clang libclang-rt-14-dev
  # The OpenCL device plugin: headers and the ICD loader to build it, PoCL's
  # CPU device to run its conformance and end-to-end tests, clinfo to look.
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
)

# Node.js runs a second GGUF reader in the tests and the Kubernetes manifest
# validator (npm packages installed under the build dir); the image may ship
# its own.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
