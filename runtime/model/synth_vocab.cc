#include "runtime/model/synth_vocab.h"

#include <map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::model {
namespace {

using tokenizer::TokenType;

// Training text for the merges: plain English with punctuation and digits, so
// the vocabulary holds the words and pieces real prompts contain.
constexpr const char kCorpus[] = R"(The factory runs through the night. Every machine on the floor
turns requests into tokens, and every token has a price. An operator who wants to know what a token
costs must count the hours, the watts, the memory and the money that the building needs.
Prices change with the weather: a hot day in July raises the power bill by 12 percent, while a cold
night in January lowers it. The cooling plant, the network and the debt on the machines are paid
every month, whether the machines are busy or idle. That is why an idle machine is the most
expensive machine of all.
A model is a long list of numbers. When a request arrives, the model reads the prompt, one word
at a time, and writes an answer, one token at a time. Short prompts are cheap; long prompts fill
the cache. The cache holds keys and values for every layer, and when it is full, the scheduler has
to decide who waits and who runs. Fairness matters: no tenant should starve, and no tenant should
take more than its share for long.
Here are some numbers from a test run: 1024 tokens in 0.85 seconds, 2048 tokens in 1.7 seconds,
4096 tokens in 3.4 seconds. The batch size was 16, then 32, then 64. With 8 sequences the device
was 40% busy; with 64 it was 95% busy. Throughput grew from 310 to 2950 tokens per second.
"How much does it cost?" she asked. "About two dollars per million tokens," he said, "if the
machines stay busy. If they sit idle, the price doubles." She wrote the numbers down, checked them
twice, and sent the report to the team before lunch.
Good systems are simple to read. Each part has one job: the loader reads the model file, the
tokenizer splits the text, the kernels multiply the matrices, and the scheduler builds the batch.
Errors are returned, not thrown; every file is checked before it is trusted; every number has a
unit. Tests build their own small models, so nothing is downloaded and nothing is secret.
In the morning the town was quiet. The river was high after the rain, the bridge was closed, and
the children walked the long way to school along the old road past the mill. The baker opened his
shop at six o'clock, the post office at eight, and the library at ten. People talked about the
weather, the price of bread, the new train station and the game on Saturday.
What is the capital of France? Paris. What is 7 times 8? 56. Where does the sun rise? In the east.
Who wrote the letter? Nobody knows, but the paper is old and the ink is brown.
Please write a short poem about the sea. The sea is wide, the sea is deep; it sings the sailors
off to sleep. The waves come in, the waves go out, and that is what the sea's about.
Summarize the following text in three sentences. Translate the next line into French. List five
colors: red, green, blue, yellow and purple. Count from one to ten: one, two, three, four, five,
six, seven, eight, nine, ten. The answer is 42, the question is unknown.
Memory bandwidth sets the speed of decoding: each new token reads every weight once, so a model of
two billion bytes on a machine with one hundred billion bytes per second can make at most fifty
tokens per second for one sequence. Batching shares that read among many sequences, which is how a
factory makes tokens cheap. Prefill is different: it reads the weights once for thousands of prompt
tokens, so it is limited by arithmetic, not by memory.
)";

enum class CharClass { kLetter, kDigit, kSpace, kNewline, kOther };

CharClass Classify(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::kLetter;
  if (c >= '0' && c <= '9') return CharClass::kDigit;
  if (c == ' ') return CharClass::kSpace;
  if (c == '\n') return CharClass::kNewline;
  return CharClass::kOther;
}

// Splits text roughly as the Llama 3 pre-tokenizer does: an optional leading
// space with a run of letters or punctuation, digits in groups of up to three,
// runs of newlines and of spaces.
std::vector<std::string> PreTokenize(const std::string& text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    const size_t start = i;
    if (text[i] == ' ' && i + 1 < text.size()) {
      const CharClass next = Classify(static_cast<unsigned char>(text[i + 1]));
      if (next == CharClass::kLetter || next == CharClass::kOther) ++i;
    }
    const CharClass cls = Classify(static_cast<unsigned char>(text[i]));
    size_t limit = cls == CharClass::kDigit ? 3 : text.size();
    size_t n = 0;
    while (i < text.size() && n < limit && Classify(static_cast<unsigned char>(text[i])) == cls) {
      ++i;
      ++n;
    }
    words.push_back(text.substr(start, i - start));
  }
  return words;
}

// splitmix64: fixed output on every platform.
uint64_t NextRandom(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Builds tokens and merges; token ids are indexes into `tokens`.
class VocabBuilder {
 public:
  VocabBuilder() {
    for (int b = 0; b < 256; ++b) Add(ByteToUnicode(static_cast<uint8_t>(b)));
  }

  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  const std::vector<std::string>& merges() const { return merges_; }
  bool Contains(const std::string& token) const { return known_.contains(token); }

  int32_t Add(const std::string& token) {
    tokens_.push_back(token);
    known_.emplace(token, size() - 1);
    return size() - 1;
  }

  // Adds the merge rule "a b"; the merged token is new unless another split
  // of the same text already made it (possible in BPE training).
  int32_t Merge(int32_t a, int32_t b) {
    merges_.push_back(absl::StrCat(tokens_[a], " ", tokens_[b]));
    const std::string merged = tokens_[a] + tokens_[b];
    auto it = known_.find(merged);
    return it != known_.end() ? it->second : Add(merged);
  }

  // Plain BPE on the corpus until `limit` tokens or no pair occurs twice.
  // Returns the ids of tokens seen in the corpus (bytes and merges).
  std::vector<int32_t> Train(const std::string& corpus, int32_t limit) {
    std::map<std::string, int64_t> word_counts;
    for (const std::string& w : PreTokenize(corpus)) ++word_counts[w];
    std::vector<std::vector<int32_t>> words;
    std::vector<int64_t> counts;
    std::vector<bool> seen(256, false);
    for (const auto& [word, count] : word_counts) {
      std::vector<int32_t> symbols;
      for (unsigned char c : word) {
        symbols.push_back(c);
        seen[c] = true;
      }
      words.push_back(std::move(symbols));
      counts.push_back(count);
    }
    std::vector<int32_t> used;
    for (int b = 0; b < 256; ++b) {
      if (seen[b]) used.push_back(b);
    }
    absl::flat_hash_map<uint64_t, int64_t> pair_counts;
    while (size() < limit) {
      pair_counts.clear();
      for (size_t w = 0; w < words.size(); ++w) {
        for (size_t k = 0; k + 1 < words[w].size(); ++k) {
          pair_counts[PairKey(words[w][k], words[w][k + 1])] += counts[w];
        }
      }
      uint64_t best = 0;
      int64_t best_count = 1;
      for (const auto& [key, count] : pair_counts) {
        // Most frequent, ties to the smallest key: independent of hash order.
        if (count > best_count || (count == best_count && count > 1 && key < best)) {
          best = key;
          best_count = count;
        }
      }
      if (best_count < 2) break;
      const auto a = static_cast<int32_t>(best >> 32);
      const auto b = static_cast<int32_t>(best & 0xffffffffu);
      const bool is_new = !Contains(tokens_[a] + tokens_[b]);
      const int32_t merged = Merge(a, b);
      if (is_new) used.push_back(merged);
      for (auto& symbols : words) {
        size_t out = 0;
        for (size_t k = 0; k < symbols.size(); ++k) {
          if (k + 1 < symbols.size() && symbols[k] == a && symbols[k + 1] == b) {
            symbols[out++] = merged;
            ++k;
          } else {
            symbols[out++] = symbols[k];
          }
        }
        symbols.resize(out);
      }
    }
    return used;
  }

 private:
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
  }

  std::vector<std::string> tokens_;
  std::vector<std::string> merges_;
  absl::flat_hash_map<std::string, int32_t> known_;
};

constexpr const char kChatTemplate[] =
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}";

}  // namespace

std::string ByteToUnicode(uint8_t b) {
  // Printable Latin-1 bytes spell themselves; the others (controls, space,
  // DEL, NBSP, soft hyphen) move to U+0100 onward in byte order.
  uint32_t code = b;
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  if (!printable) {
    uint32_t n = 0;
    for (uint32_t x = 0; x < b; ++x) {
      const bool p = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174;
      if (!p) ++n;
    }
    code = 256 + n;
  }
  std::string out;
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
  } else {
    out.push_back(static_cast<char>(0xC0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  }
  return out;
}

absl::StatusOr<tokenizer::TokenizerSpec> BuildSynthVocabulary(
    int32_t vocab_size, tokenizer::PreTokenizer pre, std::span<const std::string> extra_control) {
  const int32_t special_count = kSynthSpecialCount + static_cast<int32_t>(extra_control.size());
  if (vocab_size < 256 + special_count + 1) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size ", vocab_size, " is below ",
                                                   256 + special_count + 1,
                                                   " (256 bytes, one merge, special tokens)"));
  }
  const int32_t normal = vocab_size - special_count;
  VocabBuilder vocab;
  // Train over the byte-level spelling: symbols are byte ids, so the corpus
  // goes in raw and merges come out in the GPT-2 alphabet.
  std::vector<int32_t> pool = vocab.Train(kCorpus, normal);
  const size_t base = pool.size();
  // Reserve the special spellings so no merge can produce them.
  absl::flat_hash_set<std::string> specials(std::begin(kSynthSpecialTokens),
                                            std::end(kSynthSpecialTokens));
  specials.insert(extra_control.begin(), extra_control.end());
  uint64_t rng = 0x746F6B656E6D696Cull;  // "tokenmil"
  while (vocab.size() < normal) {
    // Extend any token by a corpus piece: lengths grow logarithmically.
    const int32_t a = pool[NextRandom(rng) % pool.size()];
    const int32_t b = pool[NextRandom(rng) % base];
    const std::string merged = vocab.tokens()[a] + vocab.tokens()[b];
    if (merged.size() > 64 || vocab.Contains(merged) || specials.contains(merged)) continue;
    pool.push_back(vocab.Merge(a, b));
  }

  tokenizer::TokenizerSpec spec;
  spec.kind = tokenizer::TokenizerKind::kByteLevelBpe;
  spec.pre = pre;
  // As a GGUF file with this pre-tokenizer loads (gguf_tokenizer.cc).
  if (pre == tokenizer::PreTokenizer::kQwen2) spec.normalizer = tokenizer::Normalizer::kNfc;
  spec.tokens = vocab.tokens();
  spec.merges = vocab.merges();
  spec.token_types.assign(spec.tokens.size(), TokenType::kNormal);
  for (const char* special : kSynthSpecialTokens) {
    spec.tokens.push_back(special);
    spec.token_types.push_back(TokenType::kControl);
  }
  for (const std::string& special : extra_control) {
    spec.tokens.push_back(special);
    spec.token_types.push_back(TokenType::kControl);
  }
  spec.bos_id = normal;
  spec.eos_id = normal + 1;
  spec.extra_eos_ids = {normal + 2};
  spec.add_bos = true;
  spec.add_eos = false;
  spec.add_space_prefix = false;
  spec.chat_template = kChatTemplate;
  return spec;
}

}  // namespace tokenmill::model
