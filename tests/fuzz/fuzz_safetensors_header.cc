// Fuzzes SafetensorsFile::Open: the length prefix and JSON header of a
// .safetensors file, read from a real mapping as model loading does. Tensor
// views of a file that parsed are touched at both ends, so one that points
// outside the mapping shows up under ASan.
#include <cstddef>
#include <cstdint>

#include "runtime/model/safetensors_file.h"
#include "tests/fuzz/memfd_path.h"

// Read bytes end up here, so that the reads are not optimised away.
uint64_t g_checksum = 0;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tokenmill::fuzz::MemoryFile file(data, size);
  auto st = tokenmill::model::SafetensorsFile::Open(file.path());
  if (!st.ok()) return 0;
  uint64_t sum = 0;
  for (const tokenmill::model::SafetensorsTensor& t : (*st)->tensors()) {
    if ((*st)->Find(t.name) == nullptr) __builtin_trap();
    if (t.bytes > 0 && !(*st)->mapping()->Contains(t.data, t.bytes)) __builtin_trap();
    if (t.bytes > 0) sum += t.data[0] + t.data[t.bytes - 1];
    sum += t.shape.size() + tokenmill::model::SafetensorsDtypeBytes(t.dtype);
  }
  g_checksum += sum;
  return 0;
}
