// Hugging Face checkpoint directory (config.json, *.safetensors,
// tokenizer.json) -> LoadedModel. Weights stay in the file mappings.
#pragma once

#include <filesystem>

#include "absl/status/statusor.h"
#include "runtime/model/model_loader.h"

namespace tokenmill::model {

// Loads `dir` (see LoadModel for the error codes). Architectures
// LlamaForCausalLM, MistralForCausalLM (llama) and Qwen2ForCausalLM (qwen2,
// with q/k/v biases); dtypes F32, F16, BF16; RoPE kHalves.
absl::StatusOr<LoadedModel> LoadSafetensorsModel(const std::filesystem::path& dir);

}  // namespace tokenmill::model
