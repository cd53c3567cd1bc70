#include "devices/cuda/core/cublas_library.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <mutex>
#include <string>
#include <vector>

namespace tokenmill::devices::cuda::core {
namespace {

struct Loaded {
  CublasApi api;
  std::string error;  // empty when api is usable
};

// The directory of the shared CUDA runtime this process uses, with a
// trailing slash, or "" when unknown or when the runtime is linked
// statically (then dladdr names the executable, not a CUDA directory).
std::string CudartDirectory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&cudaGetDeviceCount), &info) == 0 ||
      info.dli_fname == nullptr) {
    return "";
  }
  // Linked statically, the runtime sits in the same object as this code.
  Dl_info self{};
  if (dladdr(reinterpret_cast<void*>(&LoadCublas), &self) != 0 &&
      self.dli_fbase == info.dli_fbase) {
    return "";
  }
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

// Directories to try, in order, after the loader's own search failed.
std::vector<std::string> FallbackDirectories() {
  std::vector<std::string> dirs;
  if (std::string d = CudartDirectory(); !d.empty()) dirs.push_back(d);
#ifdef TOKENMILL_CUDA_LIBRARY_DIR
  // The toolkit this was built with (not on the loader's path everywhere).
  if (std::string d = TOKENMILL_CUDA_LIBRARY_DIR; !d.empty()) dirs.push_back(d + "/");
#endif
  return dirs;
}

template <typename F>
bool Resolve(void* handle, const char* name, F* out, std::string* error) {
  *out = reinterpret_cast<F>(dlsym(handle, name));
  if (*out == nullptr) *error = std::string("cuBLAS has no ") + name;
  return *out != nullptr;
}

Loaded Load() {
  Loaded l;
  const std::string name = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::string errors = dlerror();
    for (const std::string& dir : FallbackDirectories()) {
      handle = dlopen((dir + name).c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle != nullptr) break;
      errors += std::string("; ") + dlerror();
    }
    if (handle == nullptr) {
      l.error = "cannot load cuBLAS: " + errors;
      return l;
    }
  }
  CublasApi& a = l.api;
  if (!Resolve(handle, "cublasCreate_v2", &a.create, &l.error) ||
      !Resolve(handle, "cublasDestroy_v2", &a.destroy, &l.error) ||
      !Resolve(handle, "cublasSetStream_v2", &a.set_stream, &l.error) ||
      !Resolve(handle, "cublasSetWorkspace_v2", &a.set_workspace, &l.error) ||
      !Resolve(handle, "cublasSetMathMode", &a.set_math_mode, &l.error) ||
      !Resolve(handle, "cublasGemmEx", &a.gemm_ex, &l.error) ||
      !Resolve(handle, "cublasGetStatusString", &a.status_string, &l.error) ||
      !Resolve(handle, "cublasGetStatusName", &a.status_name, &l.error)) {
    // The library stays loaded: unloading cuBLAS is not worth the risk.
    return l;
  }
  return l;
}

}  // namespace

const CublasApi* LoadCublas(std::string* error) {
  static const Loaded loaded = Load();
  if (!loaded.error.empty()) {
    if (error != nullptr) *error = loaded.error;
    return nullptr;
  }
  return &loaded.api;
}

}  // namespace tokenmill::devices::cuda::core
