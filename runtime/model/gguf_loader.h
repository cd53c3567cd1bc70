// GGUF file -> LoadedModel: llama (Llama 2/3, Mistral) and qwen2
// architectures, weights left in the file mapping.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/model_loader.h"
#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::model {

// Opens and loads a GGUF file (see LoadModel for the error codes).
absl::StatusOr<LoadedModel> LoadGgufModel(const std::filesystem::path& path);

// The tokenizer.ggml.* keys of `file` as a TokenizerSpec (empty tokens when
// the file has no tokenizer.ggml.model or "none").
absl::StatusOr<tokenizer::TokenizerSpec> TokenizerFromGguf(const GgufFile& file);

// Every scalar metadata value as text (arrays skipped), for LoadedModel::metadata.
std::map<std::string, std::string> MetadataText(
    const std::vector<std::pair<std::string, GgufValue>>& metadata);

}  // namespace tokenmill::model
