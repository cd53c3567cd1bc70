// AlignedBuffer: one zero-initialised, 64-byte aligned allocation that the
// CPU executor makes once (KV cache, scratch) and never resizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

namespace tokenmill::devices::cpu {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 64;

  AlignedBuffer() = default;
  ~AlignedBuffer() { Release(); }
  AlignedBuffer(AlignedBuffer&& other) noexcept : data_(other.data_), bytes_(other.bytes_) {
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    if (this != &other) {
      Release();
      data_ = other.data_;
      bytes_ = other.bytes_;
      other.data_ = nullptr;
      other.bytes_ = 0;
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // Allocates `bytes` zeroed bytes (replacing any previous allocation);
  // false when the memory is not available. Zero bytes is a valid, empty
  // buffer.
  bool Allocate(size_t bytes) {
    Release();
    if (bytes == 0) return true;
    void* p = ::operator new (bytes, std::align_val_t{kAlignment}, std::nothrow);
    if (p == nullptr) return false;
    std::memset(p, 0, bytes);
    data_ = static_cast<uint8_t*>(p);
    bytes_ = bytes;
    return true;
  }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data_);
  }

 private:
  void Release() {
    if (data_ != nullptr) ::operator delete (data_, std::align_val_t{kAlignment});
    data_ = nullptr;
    bytes_ = 0;
  }

  uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace tokenmill::devices::cpu
