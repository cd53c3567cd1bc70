// Fuzzes GgufFile::Open: header, metadata and tensor infos of a GGUF file,
// read from a real mapping as model loading does. Every accessor of a file
// that parsed is walked, so a view that points outside the mapping shows up
// under ASan.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/model/gguf_file.h"
#include "tests/fuzz/memfd_path.h"

// Read bytes end up here, so that the reads are not optimised away.
uint64_t g_checksum = 0;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tokenmill::fuzz::MemoryFile file(data, size);
  auto gguf = tokenmill::model::GgufFile::Open(file.path());
  if (!gguf.ok()) return 0;
  const tokenmill::model::GgufFile& f = **gguf;
  uint64_t sum = f.version() + f.alignment() + f.data_offset();
  for (const auto& [key, value] : f.metadata()) {
    if (f.Find(key) == nullptr) __builtin_trap();
    sum += key.size();
  }
  for (const tokenmill::model::GgufTensorInfo& t : f.tensors()) {
    if (f.FindTensor(t.name) == nullptr) __builtin_trap();
    if (t.bytes > 0 && !f.mapping()->Contains(t.data, t.bytes)) __builtin_trap();
    // Reading the first and last byte makes ASan check the range.
    if (t.bytes > 0) sum += t.data[0] + t.data[t.bytes - 1];
    sum += t.Shape().size();
  }
  g_checksum += sum;
  return 0;
}
