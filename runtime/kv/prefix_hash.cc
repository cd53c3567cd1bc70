#include "runtime/kv/prefix_hash.h"

namespace tokenmill::kv {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

}  // namespace

uint64_t DefaultPrefixHash(uint64_t parent_hash, std::span<const int32_t> tokens,
                           std::string_view salt) {
  uint64_t h = Mix(kRootPrefixHash, parent_hash);
  h = Mix(h, salt.size());
  for (unsigned char c : salt) h = Mix(h, c);
  h = Mix(h, tokens.size());
  for (int32_t t : tokens) h = Mix(h, static_cast<uint32_t>(t));
  return h;
}

std::string PrefixSalt(std::string_view tenant, std::string_view cache_group) {
  if (!cache_group.empty()) return "group:" + std::string(cache_group);
  return "tenant:" + std::string(tenant);
}

}  // namespace tokenmill::kv
