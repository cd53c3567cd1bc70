#include "devices/dynamic_library.h"

#include <dlfcn.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::devices {

absl::StatusOr<DynamicLibrary> DynamicLibrary::Open(const std::string& name) {
  dlerror();  // clear a stale message
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* error = dlerror();
    return absl::NotFoundError(error != nullptr ? error : absl::StrCat(name, ": dlopen failed"));
  }
  return DynamicLibrary(name, handle);
}

DynamicLibrary::DynamicLibrary(DynamicLibrary&& other) noexcept
    : name_(std::move(other.name_)), handle_(std::exchange(other.handle_, nullptr)) {}

DynamicLibrary& DynamicLibrary::operator=(DynamicLibrary&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) dlclose(handle_);
    name_ = std::move(other.name_);
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

DynamicLibrary::~DynamicLibrary() {
  if (handle_ != nullptr) dlclose(handle_);
}

absl::StatusOr<void*> DynamicLibrary::Symbol(const char* symbol) const {
  dlerror();
  void* address = dlsym(handle_, symbol);
  // A symbol may legitimately be null; dlerror() tells a miss apart.
  if (const char* error = dlerror(); error != nullptr) {
    return absl::NotFoundError(absl::StrCat(name_, ": ", error));
  }
  if (address == nullptr) return absl::NotFoundError(absl::StrCat(name_, ": ", symbol, " is null"));
  return address;
}

}  // namespace tokenmill::devices
