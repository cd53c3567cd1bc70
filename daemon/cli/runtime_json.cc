#include "daemon/cli/runtime_json.h"

#include <cmath>
#include <cstdio>

#include "daemon/cli/table.h"

namespace tokenmill::cli {
namespace {

using nlohmann::json;

// A field as text whatever its JSON type ("-" when absent or null).
std::string Field(const json& j, const char* key) {
  if (!j.is_object()) return "-";
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer() || it->is_number_unsigned()) return it->dump();
  if (it->is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", it->get<double>());
    return buf;
  }
  return it->dump();
}

double Number(const json& j, const char* key, double fallback = 0.0) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

// 0 means "no limit" for the tenant limits that have one.
std::string Limit(const json& j, const char* key) {
  if (j.is_object() && j.contains(key) && j[key].is_number() && j[key].get<double>() == 0.0) {
    return "unlimited";
  }
  return Field(j, key);
}

std::string Price(const json& j, const char* key) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "$%.2f", Number(j, key));
  return buf;
}

std::string JoinStrings(const json& array, const std::string& when_empty) {
  if (!array.is_array() || array.empty()) return when_empty;
  std::string out;
  for (const json& item : array) {
    if (!out.empty()) out += ",";
    out += item.is_string() ? item.get<std::string>() : item.dump();
  }
  return out;
}

}  // namespace

json ModelLoadBody(const ModelLoadFlags& flags) {
  json body = {{"id", flags.id}, {"path", flags.path}};
  if (flags.device) body["device"] = *flags.device;
  if (flags.max_seqs) body["max_seqs"] = *flags.max_seqs;
  if (flags.max_batch_tokens) body["max_batch_tokens"] = *flags.max_batch_tokens;
  if (flags.context) body["context"] = *flags.context;
  return body;
}

json TenantPutBody(const TenantFlags& flags) {
  json body = json::object();
  if (!flags.api_keys.empty()) body["api_keys"] = flags.api_keys;
  if (!flags.api_keys_sha256.empty()) body["api_keys_sha256"] = flags.api_keys_sha256;
  if (flags.weight) body["weight"] = *flags.weight;
  if (flags.rate_limit_tokens_per_s)
    body["rate_limit_tokens_per_s"] = *flags.rate_limit_tokens_per_s;
  if (flags.schema_compile_s_per_min)
    body["schema_compile_s_per_min"] = *flags.schema_compile_s_per_min;
  if (flags.max_concurrent) body["max_concurrent"] = *flags.max_concurrent;
  if (flags.max_queue) body["max_queue"] = *flags.max_queue;
  if (flags.kv_reserved_blocks) body["kv_reserved_blocks"] = *flags.kv_reserved_blocks;
  if (flags.kv_max_fraction) body["kv_max_fraction"] = *flags.kv_max_fraction;
  if (flags.cache_group) body["cache_group"] = *flags.cache_group;
  if (!flags.models.empty()) body["models"] = flags.models;
  if (flags.price_input_per_mtok) body["price_input_per_mtok"] = *flags.price_input_per_mtok;
  if (flags.price_output_per_mtok) body["price_output_per_mtok"] = *flags.price_output_per_mtok;
  return body;
}

json GenerateBody(const GenerateFlags& flags) {
  json body = {{"model", flags.model}, {"stream", true}};
  if (flags.chat) {
    body["messages"] = json::array({{{"role", "user"}, {"content", flags.prompt}}});
  } else {
    body["prompt"] = flags.prompt;
  }
  if (flags.max_tokens) body["max_tokens"] = *flags.max_tokens;
  if (flags.temperature) body["temperature"] = *flags.temperature;
  if (flags.seed) body["seed"] = *flags.seed;
  if (!flags.stop.empty()) body["stop"] = flags.stop;
  // Asks for the final usage chunk, so the summary counts tokens, not chunks.
  body["stream_options"] = {{"include_usage", true}};
  return body;
}

std::optional<std::string> DefaultModel(const json& models_list) {
  const json models =
      models_list.is_object() ? models_list.value("models", json::array()) : models_list;
  if (!models.is_array()) return std::nullopt;
  for (const json& model : models) {
    if (model.is_object() && model.value("state", "") == "ready") {
      return model.value("id", "");
    }
  }
  return std::nullopt;
}

TableRows ModelRows(const json& models) {
  TableRows rows = {
      {"ID", "DEVICE", "STATE", "PROGRESS", "RUNNING", "WAITING", "KV USED/CACHED", "GENERATED"}};
  if (!models.is_array()) return rows;
  for (const json& m : models) {
    if (!m.is_object()) continue;
    const json stats = m.value("stats", json::object());
    char progress[16];
    std::snprintf(progress, sizeof(progress), "%d%%",
                  static_cast<int>(std::floor(Number(m, "load_progress") * 100 + 1e-9)));
    std::string state = Field(m, "state");
    rows.push_back({Field(m, "id"), Field(m, "device"), state, progress, Field(stats, "running"),
                    Field(stats, "waiting"),
                    Field(stats, "kv_blocks_used") + "/" + Field(stats, "kv_blocks_cached"),
                    Field(stats, "generated_tokens")});
  }
  return rows;
}

TableRows TenantRows(const json& tenants) {
  TableRows rows = {{"NAME", "SOURCE", "WEIGHT", "RATE", "IN FLIGHT", "QUEUE", "KV RESERVED",
                     "KV MAX", "CACHE GROUP", "MODELS", "KEYS", "PRICE IN/OUT"}};
  if (!tenants.is_array()) return rows;
  for (const json& t : tenants) {
    if (!t.is_object()) continue;
    std::string group = Field(t, "cache_group");
    rows.push_back({Field(t, "name"), Field(t, "source"), Field(t, "weight"),
                    Limit(t, "rate_limit_tokens_per_s"),
                    Field(t, "in_flight") + "/" + Limit(t, "max_concurrent"), Field(t, "max_queue"),
                    Field(t, "kv_reserved_blocks"), Field(t, "kv_max_fraction"),
                    group.empty() ? "-" : group, JoinStrings(t.value("models", json::array()), "*"),
                    Field(t, "api_key_count"),
                    Price(t, "price_input_per_mtok") + "/" + Price(t, "price_output_per_mtok")});
  }
  return rows;
}

TableRows TenantDetailRows(const json& t) {
  if (!t.is_object()) return {};
  std::string group = Field(t, "cache_group");
  return {{"name", Field(t, "name")},
          {"source", Field(t, "source")},
          {"api keys", Field(t, "api_key_count")},
          {"weight", Field(t, "weight")},
          {"rate limit", Limit(t, "rate_limit_tokens_per_s") + " tokens/s"},
          {"schema compile", Limit(t, "schema_compile_s_per_min") + " s per minute"},
          {"max concurrent", Limit(t, "max_concurrent")},
          {"max queue", Field(t, "max_queue")},
          {"in flight", Field(t, "in_flight")},
          {"kv reserved blocks", Field(t, "kv_reserved_blocks")},
          {"kv max fraction", Field(t, "kv_max_fraction")},
          {"cache group", group.empty() || group == "-" ? "(private)" : group},
          {"models", JoinStrings(t.value("models", json::array()), "(all)")},
          {"price input", Price(t, "price_input_per_mtok") + " per Mtok"},
          {"price output", Price(t, "price_output_per_mtok") + " per Mtok"}};
}

std::string PathSegment(const std::string& name) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : name) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string ModelReadyLine(const json& m) {
  return Field(m, "id") + " ready on " + Field(m, "device") + ": " + Field(m, "architecture") +
         ", " + FormatBytes(static_cast<uint64_t>(Number(m, "weight_bytes"))) +
         " weights, context " + Field(m, "context") + ", max " + Field(m, "max_seqs") +
         " sequences";
}

}  // namespace tokenmill::cli
