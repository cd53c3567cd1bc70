#include "runtime/grammar/grammar_matcher.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"

namespace tokenmill::grammar {

GrammarMatcher::GrammarMatcher(CompiledGrammarPtr grammar)
    : grammar_(std::move(grammar)),
      stepper_(grammar_->automaton(), grammar_->max_stack_depth()),
      walker_(grammar_->automaton(), grammar_->max_stack_depth()) {
  const ByteAutomaton& a = grammar_->automaton();
  const int32_t start = a.rule_start[a.root_rule];
  stacks_.Add({&start, 1});
}

bool GrammarMatcher::IsComplete() const {
  if (finished_) return false;
  const ByteAutomaton& a = grammar_->automaton();
  for (size_t i = 0; i < stacks_.size(); ++i) {
    const std::span<const int32_t> stack = stacks_.stack(i);
    if (std::all_of(stack.begin(), stack.end(), [&](int32_t s) { return a.accepting[s] != 0; })) {
      return true;
    }
  }
  return false;
}

bool GrammarMatcher::IsTerminated() {
  if (!IsComplete()) return false;
  const ByteAutomaton& a = grammar_->automaton();
  // Any byte class that moves some stack means more may follow.
  std::array<bool, 256> seen_class{};
  for (int b = 0; b < 256; ++b) {
    if (seen_class[a.byte_class[b]]) continue;
    seen_class[a.byte_class[b]] = true;
    bool undecided = false;
    stepper_.Step(stacks_, static_cast<uint8_t>(b), false, &next_, &undecided);
    if (!next_.empty()) return false;
  }
  return true;
}

int32_t GrammarMatcher::MinBytesToComplete() const {
  const ByteAutomaton& a = grammar_->automaton();
  int32_t best = std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i < stacks_.size(); ++i) {
    int32_t sum = 0;
    for (const int32_t s : stacks_.stack(i)) sum += a.min_bytes[s];
    best = std::min(best, sum);
  }
  return best;
}

void GrammarMatcher::MaskFromStack(std::span<const int32_t> stack, std::span<uint32_t> words) {
  const TokenVocabulary& v = grammar_->vocabulary();
  const auto set_bits = [&](std::span<const int32_t> ids) {
    return [&words, ids](size_t i, TokenFate fate) {
      if (fate == TokenFate::kAccepted) words[ids[i] >> 5] |= 1u << (ids[i] & 31);
    };
  };
  const int32_t top = stack.back();
  single_.Clear();
  single_.Add(stack);
  if (static_cast<int32_t>(stack.size()) - 1 + grammar_->max_push(top) >
      grammar_->max_stack_depth()) {
    // Too close to the stack limit for the precomputed mask: walk the whole
    // vocabulary from this stack.
    const std::span<const int32_t> ids(v.sorted_ids());
    walker_.Walk(
        single_, false, ids, v.sorted_lcp(), [&](size_t i) { return v.sorted_bytes(i); },
        set_bits(ids), [&](size_t i, size_t depth) { return v.SkipSubtree(i, depth); });
    return;
  }
  if (std::find(masked_tops_.begin(), masked_tops_.end(), top) == masked_tops_.end()) {
    const std::span<const uint32_t> mask = grammar_->AcceptedMask(top);
    for (size_t w = 0; w < words.size(); ++w) words[w] |= mask[w];
    masked_tops_.push_back(top);
  }
  const std::span<const int32_t> undecided = grammar_->UndecidedTokens(top);
  if (!undecided.empty()) {
    walker_.Walk(
        single_, false, undecided, grammar_->UndecidedLcp(top),
        [&](size_t i) { return v.bytes(undecided[i]); }, set_bits(undecided));
  }
}

void GrammarMatcher::FillNextTokenBitmask(std::span<uint32_t> words) {
  std::fill(words.begin(), words.end(), 0);
  if (finished_) return;
  const TokenVocabulary& v = grammar_->vocabulary();
  const ByteAutomaton& a = grammar_->automaton();
  masked_tops_.clear();
  for (size_t i = 0; i < stacks_.size(); ++i) {
    std::span<const int32_t> stack = stacks_.stack(i);
    // The stack itself and, while its top may return, its caller's frames:
    // tokens that start after a return are masked from the caller's state.
    while (true) {
      MaskFromStack(stack, words);
      const int32_t top = stack.back();
      if (stack.size() == 1 || !a.accepting[top]) break;
      stack = stack.first(stack.size() - 1);
    }
  }
  if (IsComplete()) {
    for (const int32_t id : v.eos_ids()) words[id >> 5] |= 1u << (id & 31);
  }
}

bool GrammarMatcher::StepBytes(std::string_view bytes) {
  // stacks_ is only replaced when every byte went through.
  const StackSet* from = &stacks_;
  StackSet* bufs[2] = {&next_, &single_};
  int flip = 0;
  for (const char c : bytes) {
    bool undecided = false;
    StackSet* to = bufs[flip];
    stepper_.Step(*from, static_cast<uint8_t>(c), false, to, &undecided);
    if (to->empty()) return false;
    from = to;
    flip ^= 1;
  }
  if (from != &stacks_) std::swap(stacks_, *const_cast<StackSet*>(from));
  return true;
}

absl::Status GrammarMatcher::AcceptToken(int32_t id) {
  const TokenVocabulary& v = grammar_->vocabulary();
  if (id < 0 || id >= v.size())
    return absl::InvalidArgumentError(absl::StrCat("token ", id, " out of range"));
  if (finished_) return absl::InvalidArgumentError("the grammar has already ended");
  if (std::find(v.eos_ids().begin(), v.eos_ids().end(), id) != v.eos_ids().end()) {
    if (!IsComplete())
      return absl::InvalidArgumentError("end of sequence before the value is complete");
    finished_ = true;
    return absl::OkStatus();
  }
  const std::string_view bytes = v.bytes(id);
  if (bytes.empty() || !StepBytes(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("token ", id, " is not allowed here"));
  }
  return absl::OkStatus();
}

namespace {

constexpr float kMaskedLogit = -std::numeric_limits<float>::infinity();

// Whole words of 32 logits: an all-ones word is left alone, a zero word
// filled, a mixed one selected lane by lane (branch-free, vectorisable).
void MaskWordsPortable(float* row, const uint32_t* words, size_t n) {
  uint32_t neg_inf_bits;
  std::memcpy(&neg_inf_bits, &kMaskedLogit, sizeof(neg_inf_bits));
  for (size_t w = 0; w < n; ++w, row += 32) {
    const uint32_t m = words[w];
    if (m == 0xFFFFFFFFu) continue;
    if (m == 0) {
      std::fill(row, row + 32, kMaskedLogit);
      continue;
    }
    uint32_t bits[32];
    std::memcpy(bits, row, sizeof(bits));
    for (int b = 0; b < 32; ++b) {
      const uint32_t keep = 0u - ((m >> b) & 1u);
      bits[b] = (bits[b] & keep) | (neg_inf_bits & ~keep);
    }
    std::memcpy(row, bits, sizeof(bits));
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// The same with AVX2: a mixed word is four 8-lane blends, each lane's keep
// bit spread by a compare against its own bit.
__attribute__((target("avx2"))) void MaskWordsAvx2(float* row, const uint32_t* words, size_t n) {
  const __m256 neg_inf = _mm256_set1_ps(kMaskedLogit);
  const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (size_t w = 0; w < n; ++w, row += 32) {
    const uint32_t m = words[w];
    if (m == 0xFFFFFFFFu) continue;
    if (m == 0) {
      for (int k = 0; k < 4; ++k) _mm256_storeu_ps(row + 8 * k, neg_inf);
      continue;
    }
    for (int k = 0; k < 4; ++k) {
      const __m256i byte = _mm256_set1_epi32(static_cast<int>((m >> (8 * k)) & 0xFFu));
      const __m256i keep = _mm256_cmpeq_epi32(_mm256_and_si256(byte, lane_bits), lane_bits);
      const __m256 v = _mm256_loadu_ps(row + 8 * k);
      _mm256_storeu_ps(row + 8 * k, _mm256_blendv_ps(neg_inf, v, _mm256_castsi256_ps(keep)));
    }
  }
}
#endif

using MaskWordsFn = void (*)(float*, const uint32_t*, size_t);

MaskWordsFn PickMaskWords() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (__builtin_cpu_supports("avx2")) return MaskWordsAvx2;
#endif
  return MaskWordsPortable;
}

}  // namespace

void ApplyBitmask(std::span<float> logits, std::span<const uint32_t> words) {
  static const MaskWordsFn mask_words = PickMaskWords();
  const size_t covered = std::min(logits.size(), words.size() * 32);
  const size_t whole = covered / 32;
  mask_words(logits.data(), words.data(), whole);
  for (size_t i = whole * 32; i < covered; ++i) {
    if (((words[i >> 5] >> (i & 31)) & 1u) == 0) logits[i] = kMaskedLogit;
  }
  for (size_t i = covered; i < logits.size(); ++i) logits[i] = kMaskedLogit;
}

}  // namespace tokenmill::grammar
