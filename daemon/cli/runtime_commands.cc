#include "daemon/cli/runtime_commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <thread>

#include "daemon/cli/control_json.h"
#include "daemon/cli/progress.h"
#include "daemon/cli/sse.h"
#include "daemon/cli/table.h"

namespace tokenmill::cli {
namespace {

using nlohmann::json;

constexpr auto kPollInterval = std::chrono::milliseconds(200);

void PrintJson(const json& j) { std::printf("%s\n", j.dump(2).c_str()); }

std::string ModelPath(const std::string& id) { return "/control/v1/models/" + PathSegment(id); }
std::string TenantPath(const std::string& name) {
  return "/control/v1/tenants/" + PathSegment(name);
}

// A repeatable option that takes one value per occurrence, so that
// `--stop x PROMPT` does not read PROMPT as a second stop string.
void OnePerUse(CLI::Option* option) { option->allow_extra_args(false); }

template <typename T>
std::optional<T> IfGiven(const CLI::Option* option, const T& value) {
  if (option == nullptr || option->count() == 0) return std::nullopt;
  return value;
}

}  // namespace

RuntimeCommands::RuntimeCommands(CLI::App& app) {
  auto* models = app.add_subcommand("models", "model instances: list, load, unload");
  models->require_subcommand(1);
  models_list_ = models->add_subcommand("list", "models with state, load and KV use");
  models_load_ = models->add_subcommand("load", "load a model and wait until it is ready");
  models_load_->add_option("id", load_.id, "the model's id in the API")->required();
  models_load_
      ->add_option("path", load_.path,
                   "GGUF file or safetensors directory under the node's model roots (a relative "
                   "path is taken from the current directory)")
      ->required();
  load_.device_opt = models_load_->add_option(
      "--device", load_.device,
      "device id (cpu, cuda:0; default: the device with the most free memory)");
  load_.max_seqs_opt =
      models_load_->add_option("--max-seqs", load_.max_seqs, "sequences running at once");
  load_.max_batch_tokens_opt =
      models_load_->add_option("--max-batch-tokens", load_.max_batch_tokens, "tokens per step");
  load_.context_opt = models_load_->add_option("--context", load_.context, "context length");
  models_load_->add_flag("--no-wait", load_.no_wait, "return once the load has started");
  models_unload_ = models->add_subcommand("unload", "drain and unload a model");
  models_unload_->add_option("id", unload_id_, "the model's id")->required();
  models_unload_->add_flag("--wait", unload_wait_, "wait until it is gone");

  auto* tenants = app.add_subcommand("tenants", "tenants: list, get, put, delete");
  tenants->require_subcommand(1);
  tenants_list_ = tenants->add_subcommand("list", "tenants with limits and prices");
  tenants_get_ = tenants->add_subcommand("get", "one tenant");
  tenants_get_->add_option("name", tenant_name_, "tenant name")->required();
  tenants_delete_ = tenants->add_subcommand("delete", "remove a tenant added through the API");
  tenants_delete_->add_option("name", tenant_name_, "tenant name")->required();
  tenants_put_ = tenants->add_subcommand(
      "put",
      "add a tenant, or change only the given settings of an existing one (--key/--key-sha256 "
      "replace its keys); with --replace, settings left out are reset to their defaults");
  TenantOptions& p = put_;
  tenants_put_->add_option("name", p.name, "tenant name")->required();
  OnePerUse(tenants_put_->add_option("--key", p.keys,
                                     "an API key (repeatable; only its SHA-256 is kept)"));
  OnePerUse(
      tenants_put_->add_option("--key-sha256", p.key_hashes, "an API key's SHA-256 (repeatable)"));
  p.weight_opt = tenants_put_->add_option("--weight", p.weight, "fair-share weight");
  p.rate_opt = tenants_put_->add_option("--rate", p.rate, "tokens per second, 0 = unlimited");
  p.compile_opt = tenants_put_->add_option(
      "--schema-compile", p.compile,
      "seconds per minute it may spend compiling schemas not compiled before, 0 = unlimited "
      "(default 10)");
  p.max_concurrent_opt = tenants_put_->add_option(
      "--max-concurrent", p.max_concurrent,
      "sequences running at once (a request's n choices count n), 0 = unlimited");
  p.max_queue_opt = tenants_put_->add_option("--max-queue", p.max_queue,
                                             "sequences waiting beyond --max-concurrent");
  p.kv_reserved_opt =
      tenants_put_->add_option("--kv-reserved", p.kv_reserved, "KV blocks reserved");
  p.kv_max_fraction_opt = tenants_put_->add_option("--kv-max-fraction", p.kv_max_fraction,
                                                   "largest share of KV blocks, (0, 1]");
  p.cache_group_opt =
      tenants_put_->add_option("--cache-group", p.cache_group, "prefix cache shared by name");
  OnePerUse(
      tenants_put_->add_option("--model", p.models, "a model it may use (repeatable; none = all)"));
  p.price_in_opt = tenants_put_->add_option("--price-in", p.price_in, "$ per million input tokens");
  p.price_out_opt =
      tenants_put_->add_option("--price-out", p.price_out, "$ per million output tokens");
  tenants_put_->add_flag("--replace", p.replace,
                         "replace the whole tenant: flags left out take their defaults (no keys, "
                         "prices 0)");

  GenerateOptions& g = generate_;
  generate_cmd_ = app.add_subcommand("generate", "stream a completion to stdout");
  generate_cmd_->add_option("prompt", g.prompt, "the prompt")->required();
  generate_cmd_->add_option("--model", g.model, "model id (default: the first ready model)");
  generate_cmd_->add_option("--key", g.key, "API key ($TOKENMILL_API_KEY)");
  generate_cmd_->add_flag("--chat", g.chat, "send the prompt as a chat user message");
  g.max_tokens_opt = generate_cmd_->add_option("--max-tokens", g.max_tokens, "tokens to generate");
  g.temperature_opt =
      generate_cmd_->add_option("--temperature", g.temperature, "sampling temperature");
  g.seed_opt = generate_cmd_->add_option("--seed", g.seed, "sampling seed");
  OnePerUse(generate_cmd_->add_option("--stop", g.stop, "stop string (repeatable)"));
}

int RuntimeCommands::Run(ControlClient& client, bool as_json) {
  if (models_list_->parsed()) return ModelsList(client, as_json);
  if (models_load_->parsed()) return ModelsLoad(client, as_json);
  if (models_unload_->parsed()) return ModelsUnload(client, as_json);
  if (tenants_list_->parsed()) return TenantsList(client, as_json);
  if (tenants_get_->parsed()) return TenantsGet(client, as_json);
  if (tenants_put_->parsed()) return TenantsPut(client, as_json);
  if (tenants_delete_->parsed()) return TenantsDelete(client, as_json);
  if (generate_cmd_->parsed()) return Generate(client);
  return -1;
}

namespace {

// GET `path` and print its `key` array as a table (or the raw JSON).
template <typename RowsFn>
int ListCommand(ControlClient& client, bool as_json, const char* path, const char* key,
                RowsFn rows) {
  auto body = FetchJson(client, "GET", path);
  if (!body) return 1;
  if (as_json) {
    PrintJson(*body);
  } else {
    std::fputs(RenderTable(rows(body->value(key, json::array()))).c_str(), stdout);
  }
  return 0;
}

}  // namespace

int RuntimeCommands::ModelsList(ControlClient& client, bool as_json) {
  return ListCommand(client, as_json, "/control/v1/models", "models",
                     [](const json& list) { return ModelRows(list); });
}

int RuntimeCommands::ModelsLoad(ControlClient& client, bool as_json) {
  // The daemon takes absolute paths only: a relative one means the caller's
  // working directory, not the daemon's.
  std::string path = load_.path;
  if (!path.empty() && path.front() != '/' && path.find('\0') == std::string::npos) {
    std::error_code ec;
    std::filesystem::path absolute = std::filesystem::absolute(path, ec);
    if (!ec) path = absolute.lexically_normal().string();
  }
  ModelLoadFlags flags{
      .id = load_.id,
      .path = path,
      .device = IfGiven(load_.device_opt, load_.device),
      .max_seqs = IfGiven(load_.max_seqs_opt, load_.max_seqs),
      .max_batch_tokens = IfGiven(load_.max_batch_tokens_opt, load_.max_batch_tokens),
      .context = IfGiven(load_.context_opt, load_.context)};
  auto model = FetchJson(client, "POST", "/control/v1/models", ModelLoadBody(flags).dump());
  if (!model) return 1;
  if (load_.no_wait) {
    if (as_json) {
      PrintJson(*model);
    } else {
      std::printf("%s %s\n", load_.id.c_str(), model->value("state", "loading").c_str());
    }
    return 0;
  }
  LoadProgress progress(load_.id, isatty(STDERR_FILENO) == 1);
  auto show = [](const std::string& text) {
    if (text.empty()) return;
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
  };
  while (true) {
    const std::string state = model->value("state", "");
    if (state == "loading") {
      show(progress.Update(model->value("load_progress", 0.0)));
      std::this_thread::sleep_for(kPollInterval);
      JsonAnswer answer = CallJson(client, "GET", ModelPath(load_.id));
      if (!answer.ok()) {
        show(progress.Finish(false));
        PrintError("models load", answer.status == 404
                                      ? "model " + load_.id + " went away while loading"
                                      : answer.error);
        return 1;
      }
      model = std::move(answer.body);
      continue;
    }
    show(progress.Finish(state == "ready"));
    if (as_json) PrintJson(*model);
    if (state == "ready") {
      if (!as_json) std::printf("%s\n", ModelReadyLine(*model).c_str());
      return 0;
    }
    std::string error = model->value("error", "");
    PrintError("models load", load_.id + " " + (state.empty() ? "in no state" : state) +
                                  (error.empty() ? "" : ": " + error));
    return 1;
  }
}

int RuntimeCommands::ModelsUnload(ControlClient& client, bool as_json) {
  auto model = FetchJson(client, "DELETE", ModelPath(unload_id_));
  if (!model) return 1;
  if (!unload_wait_) {
    if (as_json) {
      PrintJson(*model);
    } else {
      std::printf("%s %s\n", unload_id_.c_str(), model->value("state", "unloading").c_str());
    }
    return 0;
  }
  while (true) {
    JsonAnswer answer = CallJson(client, "GET", ModelPath(unload_id_));
    if (answer.status == 404) break;
    if (!answer.ok()) {
      PrintError("models unload", answer.error);
      return 1;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  if (as_json) {
    PrintJson(json{{"id", unload_id_}, {"state", "unloaded"}});
  } else {
    std::printf("%s unloaded\n", unload_id_.c_str());
  }
  return 0;
}

int RuntimeCommands::TenantsList(ControlClient& client, bool as_json) {
  return ListCommand(client, as_json, "/control/v1/tenants", "tenants",
                     [](const json& list) { return TenantRows(list); });
}

int RuntimeCommands::TenantsGet(ControlClient& client, bool as_json) {
  auto tenant = FetchJson(client, "GET", TenantPath(tenant_name_));
  if (!tenant) return 1;
  if (as_json) {
    PrintJson(*tenant);
  } else {
    std::fputs(RenderTable(TenantDetailRows(*tenant)).c_str(), stdout);
  }
  return 0;
}

int RuntimeCommands::TenantsPut(ControlClient& client, bool as_json) {
  const TenantOptions& p = put_;
  TenantFlags flags{.api_keys = p.keys,
                    .api_keys_sha256 = p.key_hashes,
                    .weight = IfGiven(p.weight_opt, p.weight),
                    .rate_limit_tokens_per_s = IfGiven(p.rate_opt, p.rate),
                    .schema_compile_s_per_min = IfGiven(p.compile_opt, p.compile),
                    .max_concurrent = IfGiven(p.max_concurrent_opt, p.max_concurrent),
                    .max_queue = IfGiven(p.max_queue_opt, p.max_queue),
                    .kv_reserved_blocks = IfGiven(p.kv_reserved_opt, p.kv_reserved),
                    .kv_max_fraction = IfGiven(p.kv_max_fraction_opt, p.kv_max_fraction),
                    .cache_group = IfGiven(p.cache_group_opt, p.cache_group),
                    .models = p.models,
                    .price_input_per_mtok = IfGiven(p.price_in_opt, p.price_in),
                    .price_output_per_mtok = IfGiven(p.price_out_opt, p.price_out)};
  const std::string body = TenantPutBody(flags).dump();
  // PATCH changes only what was given; a tenant that does not exist yet is
  // created with PUT (defaults for the rest).
  std::optional<json> tenant;
  if (!p.replace) {
    JsonAnswer patched = CallJson(client, "PATCH", TenantPath(p.name), body);
    if (patched.ok()) {
      tenant = std::move(patched.body);
    } else if (patched.status != 404) {
      PrintError("tenants put", patched.error);
      return 1;
    }
  }
  if (!tenant) tenant = FetchJson(client, "PUT", TenantPath(p.name), body);
  if (!tenant) return 1;
  if (as_json) {
    PrintJson(*tenant);
  } else {
    std::fputs(RenderTable(TenantDetailRows(*tenant)).c_str(), stdout);
  }
  return 0;
}

int RuntimeCommands::TenantsDelete(ControlClient& client, bool as_json) {
  auto body = FetchJson(client, "DELETE", TenantPath(tenant_name_));
  if (!body) return 1;
  if (as_json) {
    PrintJson(*body);
  } else {
    std::printf("deleted %s\n", tenant_name_.c_str());
  }
  return 0;
}

int RuntimeCommands::Generate(ControlClient& client) {
  GenerateOptions& g = generate_;
  if (g.model.empty()) {
    auto models = FetchJson(client, "GET", "/control/v1/models");
    if (!models) return 1;
    std::optional<std::string> model = DefaultModel(*models);
    if (!model) {
      PrintError("generate", "no model is ready (load one with `tokenmill models load`)");
      return 1;
    }
    g.model = *model;
  }
  std::string key = g.key;
  if (key.empty()) {
    const char* env_key = std::getenv("TOKENMILL_API_KEY");
    if (env_key) key = env_key;
  }
  client.set_bearer_token(key);

  GenerateFlags flags{.model = g.model,
                      .prompt = g.prompt,
                      .chat = g.chat,
                      .max_tokens = IfGiven(g.max_tokens_opt, g.max_tokens),
                      .temperature = IfGiven(g.temperature_opt, g.temperature),
                      .seed = IfGiven(g.seed_opt, g.seed),
                      .stop = g.stop};
  const char* path = g.chat ? "/v1/chat/completions" : "/v1/completions";
  char last_char = '\n';
  GenerationStream stream(g.chat, [&last_char](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    last_char = text.back();
  });
  const auto start = std::chrono::steady_clock::now();
  ControlResponse response =
      client.Stream("POST", path, GenerateBody(flags).dump(), [&stream](std::string_view chunk) {
        stream.Feed(chunk);
        return true;
      });
  stream.Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (last_char != '\n' && isatty(STDOUT_FILENO) == 1) std::fputc('\n', stdout);
  std::fflush(stdout);

  if (response.status == 0) {
    PrintError("generate",
               "cannot reach tokenmilld at " + client.endpoint() + ": " + response.error);
    return 1;
  }
  if (response.status >= 400) {
    json body = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
    std::string message = body.is_discarded() ? response.body : ErrorMessage(body);
    PrintError("generate", "HTTP " + std::to_string(response.status) + ": " + message);
    return 1;
  }
  if (stream.error()) {
    PrintError("generate", *stream.error());
    return 1;
  }
  std::fprintf(stderr, "%s\n",
               FormatGenerationSummary(stream.tokens(), seconds, stream.finish_reason()).c_str());
  if (!stream.done()) {
    PrintError("generate", "the stream ended before [DONE]");
    return 1;
  }
  return 0;
}

}  // namespace tokenmill::cli
