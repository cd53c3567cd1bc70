// Model loading: a GGUF file or a Hugging Face safetensors directory becomes
// a devices::ModelSpec (weights memory-mapped, not copied, where the file's
// layout allows) and a tokenizer::TokenizerSpec.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "devices/model_spec.h"
#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::model {

struct LoadedModel {
  devices::ModelSpec spec;
  tokenizer::TokenizerSpec tokenizer;
  std::string format;  // "gguf" | "safetensors"
  std::filesystem::path path;
  std::map<std::string, std::string> metadata;  // general.name, general.architecture, ...
};

// `path` is a .gguf file, or a directory with config.json, tokenizer.json and
// one or more *.safetensors files (model.safetensors.index.json when sharded).
// Errors name the file, the tensor or key, and what is wrong:
// kInvalidArgument for corrupt or inconsistent content, kUnimplemented for an
// unsupported architecture or weight type, kNotFound for missing files.
absl::StatusOr<LoadedModel> LoadModel(const std::filesystem::path& path);

}  // namespace tokenmill::model
