// A shared library opened with dlopen, closed when the owner goes.
//
// The device layer reaches vendor drivers (libcuda, NVML, plugins) through
// dlopen so that tokenmill builds and runs on machines without them.
#pragma once

#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace tokenmill::devices {

// Move-only owner of a dlopen handle. Symbols resolved from it are valid
// only while it lives. Thread safe after construction (dlsym is).
class DynamicLibrary {
 public:
  // dlopen(name, RTLD_NOW | RTLD_LOCAL): every symbol bound at once so a
  // broken library fails here, and its symbols stay out of the global
  // namespace. kNotFound with dlerror()'s text when it cannot be loaded.
  static absl::StatusOr<DynamicLibrary> Open(const std::string& name);

  DynamicLibrary(DynamicLibrary&& other) noexcept;
  DynamicLibrary& operator=(DynamicLibrary&& other) noexcept;
  DynamicLibrary(const DynamicLibrary&) = delete;
  DynamicLibrary& operator=(const DynamicLibrary&) = delete;
  ~DynamicLibrary();

  // The address of `symbol`; kNotFound when the library lacks it.
  absl::StatusOr<void*> Symbol(const char* symbol) const;

  // Sets `*fn` to `symbol` cast to the function type the caller declares;
  // the declaration must match the library's (C ABI, no checking possible).
  template <typename Fn>
  absl::Status Resolve(const char* symbol, Fn** fn) const {
    absl::StatusOr<void*> address = Symbol(symbol);
    if (!address.ok()) return address.status();
    *fn = reinterpret_cast<Fn*>(*address);
    return absl::OkStatus();
  }

  const std::string& name() const { return name_; }

 private:
  DynamicLibrary(std::string name, void* handle) : name_(std::move(name)), handle_(handle) {}

  std::string name_;
  void* handle_ = nullptr;
};

}  // namespace tokenmill::devices
