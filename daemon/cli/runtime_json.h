// The runtime commands' pure parts: request bodies built from command-line
// flags, and tables drawn from the daemon's model and tenant JSON. Nothing
// here talks to the daemon, so tests check it directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace tokenmill::cli {

// `tokenmill models load ID PATH ...`; unset flags are left to the daemon.
struct ModelLoadFlags {
  std::string id = "";
  std::string path = "";
  std::optional<std::string> device = std::nullopt;
  std::optional<int64_t> max_seqs = std::nullopt;
  std::optional<int64_t> max_batch_tokens = std::nullopt;
  std::optional<int64_t> context = std::nullopt;
};
nlohmann::json ModelLoadBody(const ModelLoadFlags& flags);

// `tokenmill tenants put NAME ...`; unset flags are left out of the body.
struct TenantFlags {
  std::vector<std::string> api_keys = {};         // --key, plaintext
  std::vector<std::string> api_keys_sha256 = {};  // --key-sha256
  std::optional<double> weight = std::nullopt;
  std::optional<double> rate_limit_tokens_per_s = std::nullopt;
  std::optional<double> schema_compile_s_per_min = std::nullopt;
  std::optional<int64_t> max_concurrent = std::nullopt;
  std::optional<int64_t> max_queue = std::nullopt;
  std::optional<int64_t> kv_reserved_blocks = std::nullopt;
  std::optional<double> kv_max_fraction = std::nullopt;
  std::optional<std::string> cache_group = std::nullopt;
  std::vector<std::string> models = {};  // --model
  std::optional<double> price_input_per_mtok = std::nullopt;
  std::optional<double> price_output_per_mtok = std::nullopt;
};
nlohmann::json TenantPutBody(const TenantFlags& flags);

// `tokenmill generate`'s request body for /v1/completions (chat false) or
// /v1/chat/completions (one user message).
struct GenerateFlags {
  std::string model = "";
  std::string prompt = "";
  bool chat = false;
  std::optional<int64_t> max_tokens = std::nullopt;
  std::optional<double> temperature = std::nullopt;
  std::optional<int64_t> seed = std::nullopt;
  std::vector<std::string> stop = {};
};
nlohmann::json GenerateBody(const GenerateFlags& flags);

// The model `generate` uses when none is named: the only ready model, or the
// first ready one in the list; nullopt when none is ready.
std::optional<std::string> DefaultModel(const nlohmann::json& models_list);

// Table rows (header first) for RenderTable.
using TableRows = std::vector<std::vector<std::string>>;
// ID, DEVICE, STATE, PROGRESS, RUNNING, WAITING, KV USED/CACHED, GENERATED.
TableRows ModelRows(const nlohmann::json& models);
// NAME, SOURCE, WEIGHT, RATE, IN FLIGHT, QUEUE, KV RESERVED, KV MAX, CACHE
// GROUP, MODELS, KEYS, PRICE IN/OUT.
TableRows TenantRows(const nlohmann::json& tenants);
// One tenant as "field  value" lines.
TableRows TenantDetailRows(const nlohmann::json& tenant);
// A model id or tenant name as one URL path segment (percent-encoded except
// for unreserved characters).
std::string PathSegment(const std::string& name);

// One line about a ready model: "m1 ready on cpu0: llama, 1.2 GiB weights, ...".
std::string ModelReadyLine(const nlohmann::json& model);

}  // namespace tokenmill::cli
