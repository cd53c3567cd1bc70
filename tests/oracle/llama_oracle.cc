// llama_oracle: llama.cpp's greedy decode of a GGUF file from fixed token id
// prompts, as JSON on stdout: for every prompt and step the chosen id and the
// top-k (id, logit) pairs of the logits it was chosen from. Built by
// tests/oracle/make_fixtures.sh against a llama.cpp build, never by CI: the
// fixtures it writes are what CI reads.
//
//   llama_oracle MODEL.gguf --prompts "1,2,3;4,5" --steps N --top-k K [--threads T]
//
// Prompts are ids, not text, so no tokenizer takes part. The KV cache is f32
// and flash attention is off, so llama.cpp rounds only where its weight types
// make it (f16 matmuls take f16 activations, quantized ones q8_0 activations).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace {

struct Args {
  std::string model;
  std::vector<std::vector<llama_token>> prompts;
  int steps = 8;
  int top_k = 8;
  int threads = 1;
};

int Usage() {
  std::fprintf(stderr,
               "usage: llama_oracle MODEL.gguf --prompts \"1,2,3;4,5\" --steps N --top-k K "
               "[--threads T]\n");
  return 2;
}

std::vector<std::vector<llama_token>> ParsePrompts(const std::string& text) {
  std::vector<std::vector<llama_token>> prompts;
  std::stringstream outer(text);
  std::string prompt;
  while (std::getline(outer, prompt, ';')) {
    std::vector<llama_token> ids;
    std::stringstream inner(prompt);
    std::string id;
    while (std::getline(inner, id, ',')) ids.push_back(static_cast<llama_token>(std::stol(id)));
    if (!ids.empty()) prompts.push_back(std::move(ids));
  }
  return prompts;
}

// FNV-1a 64 of the file: the fixture records it so that the test can tell a
// stale fixture (synth changed) from a wrong executor.
bool FileHash(const std::string& path, uint64_t* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  uint64_t h = 0xcbf29ce484222325ull;
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h = (h ^ static_cast<unsigned char>(buf[static_cast<size_t>(i)])) * 0x100000001b3ull;
    }
  }
  *out = h;
  return true;
}

void Quiet(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--prompts" && has_value) {
      args.prompts = ParsePrompts(argv[++i]);
    } else if (a == "--steps" && has_value) {
      args.steps = std::atoi(argv[++i]);
    } else if (a == "--top-k" && has_value) {
      args.top_k = std::atoi(argv[++i]);
    } else if (a == "--threads" && has_value) {
      args.threads = std::atoi(argv[++i]);
    } else if (args.model.empty() && a[0] != '-') {
      args.model = a;
    } else {
      return Usage();
    }
  }
  if (args.model.empty() || args.prompts.empty() || args.steps <= 0 || args.top_k <= 0) {
    return Usage();
  }
  uint64_t hash = 0;
  if (!FileHash(args.model, &hash)) {
    std::fprintf(stderr, "llama_oracle: cannot read %s\n", args.model.c_str());
    return 1;
  }

  llama_log_set(Quiet, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(args.model.c_str(), mp);
  if (model == nullptr) {
    std::fprintf(stderr, "llama_oracle: llama.cpp cannot load %s\n", args.model.c_str());
    return 1;
  }
  const int32_t vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

  std::printf("{\"file_fnv1a64\": \"%016llx\", \"vocab\": %d, \"cases\": [",
              static_cast<unsigned long long>(hash), vocab);
  for (size_t p = 0; p < args.prompts.size(); ++p) {
    std::vector<llama_token>& prompt = args.prompts[p];
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(prompt.size() + static_cast<size_t>(args.steps) + 8);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = args.threads;
    cp.n_threads_batch = args.threads;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (ctx == nullptr) {
      std::fprintf(stderr, "llama_oracle: cannot create a context\n");
      return 1;
    }
    std::printf("%s\n  {\"prompt\": [", p ? "," : "");
    for (size_t i = 0; i < prompt.size(); ++i) std::printf("%s%d", i ? ", " : "", prompt[i]);
    std::printf("], \"steps\": [");
    llama_batch batch = llama_batch_get_one(prompt.data(), static_cast<int32_t>(prompt.size()));
    llama_token next = 0;
    for (int step = 0; step < args.steps; ++step) {
      if (llama_decode(ctx, batch) != 0) {
        std::fprintf(stderr, "llama_oracle: llama_decode failed at step %d\n", step);
        return 1;
      }
      const float* logits = llama_get_logits_ith(ctx, -1);
      std::vector<std::pair<float, llama_token>> order(static_cast<size_t>(vocab));
      for (int32_t i = 0; i < vocab; ++i) order[static_cast<size_t>(i)] = {logits[i], i};
      const size_t k = std::min(static_cast<size_t>(args.top_k), order.size());
      // Largest first; the lower id first on equal logits (greedy's choice).
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                        [](const auto& a, const auto& b) {
                          return a.first != b.first ? a.first > b.first : a.second < b.second;
                        });
      next = order[0].second;
      std::printf("%s\n    {\"id\": %d, \"top\": [", step ? "," : "", next);
      for (size_t i = 0; i < k; ++i) {
        std::printf("%s[%d, %.7g]", i ? ", " : "", order[i].second, order[i].first);
      }
      std::printf("]}");
      batch = llama_batch_get_one(&next, 1);
    }
    std::printf("]}");
    llama_free(ctx);
  }
  std::printf("]}\n");
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
