# Sourced by the scripts that run llama.cpp next to tokenmill
# (tests/bench/vs_llamacpp.sh, tests/bench/serving_vs_llamacpp.sh,
# tests/oracle/make_fixtures.sh); never run in CI.
#
#   llama_cpp_build BUILD_DIR TARGET...
#     Makes sure BUILD_DIR, a CMake build directory of llama.cpp, holds TARGETs
#     (llama, llama-bench, llama-batched-bench, llama-server). The sources are
#     those BUILD_DIR was configured from; for a new BUILD_DIR, its parent
#     directory, cloned first when it is not a git tree from the git bundle that
#     the npm package node-llama-cpp@3.22.x carries (npm is the only network
#     this needs). Builds CPU-only, Release, for this CPU (GGML_NATIVE), with
#     the server, and only the TARGETs asked for.
#   llama_cpp_rev BUILD_DIR
#     Prints the commit of BUILD_DIR's sources (12 digits; "unknown" outside
#     git).

llama_cpp_source() {  # BUILD_DIR: the source tree it was or will be configured from
  local cache=$1/CMakeCache.txt
  if [ -f "$cache" ]; then
    sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache"
  else
    dirname "$1"
  fi
}

llama_cpp_build() {
  local build=$1
  shift
  local src
  src=$(llama_cpp_source "$build")
  if [ ! -f "$build/CMakeCache.txt" ]; then
    if [ ! -d "$src/.git" ]; then
      local tmp
      tmp=$(mktemp -d)
      (cd "$tmp" && npm pack --silent node-llama-cpp@3.22 >/dev/null && tar xzf node-llama-cpp-*.tgz)
      rm -rf "$src"
      git clone -q "$tmp/package/llama/gitRelease.bundle" "$src"
      cp "$tmp/package/llama/llama.cpp.info.json" "$src/npm-info.json"
      rm -rf "$tmp"
    fi
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
  elif [[ " $* " == *" llama-server "* ]] && ! grep -q '^LLAMA_BUILD_SERVER:BOOL=ON' "$build/CMakeCache.txt"; then
    cmake -S "$src" -B "$build" -DLLAMA_BUILD_SERVER=ON >/dev/null
  fi
  cmake --build "$build" --target "$@" -j "$(nproc)"
}

llama_cpp_rev() {
  git -C "$(llama_cpp_source "$1")" rev-parse --short=12 HEAD 2>/dev/null || echo unknown
}
