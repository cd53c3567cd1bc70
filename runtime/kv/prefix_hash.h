// Names of full KV blocks for the prefix cache: a 64-bit hash chain over
// (parent hash, the block's token ids, tenant salt).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tokenmill::kv {

// Hash of one full block given its parent's hash (kRootPrefixHash for the
// first block), its token ids and the salt. A plain function pointer so that
// tests can swap in a colliding hash; the cache never trusts the hash alone.
using PrefixHashFn = uint64_t (*)(uint64_t parent_hash, std::span<const int32_t> tokens,
                                  std::string_view salt);

// Parent hash of a sequence's first block.
inline constexpr uint64_t kRootPrefixHash = 0x9e3779b97f4a7c15ULL;

// The default chain hash (splitmix64-style mixing; stable across runs).
uint64_t DefaultPrefixHash(uint64_t parent_hash, std::span<const int32_t> tokens,
                           std::string_view salt);

// The prefix-cache salt of a tenant: its cache group when set, else its own
// name, so tenants share cached prefixes only inside one cache group. The
// prefixes keep a group named like a tenant apart from that tenant.
std::string PrefixSalt(std::string_view tenant, std::string_view cache_group);

}  // namespace tokenmill::kv
