// The tiny model shape the serving tests synthesize: fast under ASan, big
// enough for the real tokenizer (a byte-level BPE vocabulary) and chunking.
#pragma once

#include <cstdint>

#include "runtime/model/synth.h"

namespace tokenmill::testing {

inline model::SynthOptions TinyModelShape(devices::TensorType type = devices::TensorType::kF16,
                                          int32_t vocab_size = 512, int32_t context_length = 1024) {
  model::SynthOptions o;
  o.dim = 64;
  o.n_layers = 2;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.ffn_dim = 128;
  o.vocab_size = vocab_size;
  o.context_length = context_length;
  o.weight_type = type;
  return o;
}

}  // namespace tokenmill::testing
