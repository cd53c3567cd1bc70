// What the KV block manager tests share: the block and page sizes they use
// and a run of token ids.
#pragma once

#include <cstdint>
#include <numeric>
#include <vector>

namespace tokenmill::kv::testing {

inline constexpr int32_t kBlock = 4;     // tokens per block
inline constexpr uint32_t kPerPage = 4;  // blocks per arena page

// n token ids counting up from `first`.
inline std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

}  // namespace tokenmill::kv::testing
