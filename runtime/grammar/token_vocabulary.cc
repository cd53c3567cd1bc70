#include "runtime/grammar/token_vocabulary.h"

#include <algorithm>

namespace tokenmill::grammar {

uint16_t CommonPrefix(std::string_view a, std::string_view b) {
  const size_t n = std::min({a.size(), b.size(), size_t{0xFFFF}});
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<uint16_t>(i);
}

TokenVocabulary::TokenVocabulary(std::vector<std::string> token_bytes, std::vector<int32_t> eos_ids)
    : bytes_(std::move(token_bytes)), eos_ids_(std::move(eos_ids)) {
  std::vector<uint8_t> is_eos(bytes_.size(), 0);
  for (const int32_t id : eos_ids_) {
    if (id >= 0 && id < size()) is_eos[id] = 1;
  }
  byte_tokens_.fill(-1);
  for (int32_t id = size(); id-- > 0;) {
    if (bytes_[id].size() == 1 && !is_eos[id])
      byte_tokens_[static_cast<uint8_t>(bytes_[id][0])] = id;
  }
  for (int32_t id = 0; id < size(); ++id) {
    // Tokens longer than 64 KiB cannot be matched (the prefix count is 16
    // bits); no real vocabulary has one.
    if (!bytes_[id].empty() && !is_eos[id] && bytes_[id].size() < 0xFFFF) sorted_ids_.push_back(id);
  }
  std::sort(sorted_ids_.begin(), sorted_ids_.end(),
            [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });
  sorted_lcp_.resize(sorted_ids_.size(), 0);
  sorted_offsets_.push_back(0);
  for (const int32_t id : sorted_ids_) {
    sorted_blob_ += bytes_[id];
    sorted_offsets_.push_back(static_cast<uint32_t>(sorted_blob_.size()));
  }
  for (size_t i = 0; i < sorted_ids_.size(); ++i) {
    max_token_bytes_ = std::max(max_token_bytes_, bytes_[sorted_ids_[i]].size());
    if (i > 0) sorted_lcp_[i] = CommonPrefix(bytes_[sorted_ids_[i - 1]], bytes_[sorted_ids_[i]]);
  }
  lcp_min_.push_back(sorted_lcp_);
  for (size_t span = 1; span * 2 <= sorted_lcp_.size(); span *= 2) {
    const std::vector<uint16_t>& prev = lcp_min_.back();
    std::vector<uint16_t> next(sorted_lcp_.size() - span * 2 + 1);
    for (size_t i = 0; i < next.size(); ++i) next[i] = std::min(prev[i], prev[i + span]);
    lcp_min_.push_back(std::move(next));
  }
}

size_t TokenVocabulary::SkipSubtree(size_t i, size_t depth) const {
  // Jump over blocks whose least lcp is still >= depth, largest first.
  size_t at = i + 1;
  const size_t n = sorted_lcp_.size();
  // Most dead subtrees hold one token: check before the table.
  if (at >= n || sorted_lcp_[at] < depth) return at;
  for (size_t k = lcp_min_.size(); k-- > 0;) {
    if (at < lcp_min_[k].size() && at + (size_t{1} << k) <= n && lcp_min_[k][at] >= depth) {
      at += size_t{1} << k;
    }
  }
  // Blocks shrink as at grows: finish with single steps over what is left.
  while (at < n && sorted_lcp_[at] >= depth) ++at;
  return at;
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::FromTokenizer(
    const tokenizer::Tokenizer& tok) {
  std::vector<std::string> bytes(tok.vocab_size());
  std::vector<int32_t> eos;
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    bytes[id] = tok.TokenBytes(id);
    if (tok.IsEos(id)) eos.push_back(id);
  }
  return std::make_shared<const TokenVocabulary>(std::move(bytes), std::move(eos));
}

}  // namespace tokenmill::grammar
