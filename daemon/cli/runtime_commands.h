// The CLI's runtime commands, which talk to tokenmilld: `tokenmill models
// list|load|unload`, `tokenmill tenants list|get|put|delete` and `tokenmill
// generate`, which streams a completion from the OpenAI API to stdout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "daemon/cli/control_client.h"
#include "daemon/cli/runtime_json.h"

namespace tokenmill::cli {

class RuntimeCommands {
 public:
  // Adds the subcommands to app; app must outlive this object.
  explicit RuntimeCommands(CLI::App& app);

  // Runs whichever of the commands was parsed and returns its exit status
  // (0 done, 1 failed), or -1 when none of them was. as_json: print the
  // daemon's JSON instead of tables.
  int Run(ControlClient& client, bool as_json);

 private:
  int ModelsList(ControlClient& client, bool as_json);
  int ModelsLoad(ControlClient& client, bool as_json);
  int ModelsUnload(ControlClient& client, bool as_json);
  int TenantsList(ControlClient& client, bool as_json);
  int TenantsGet(ControlClient& client, bool as_json);
  int TenantsPut(ControlClient& client, bool as_json);
  int TenantsDelete(ControlClient& client, bool as_json);
  int Generate(ControlClient& client);

  // Flags are read into plain values; the Option pointers tell which of the
  // optional ones were given.
  struct LoadOptions {
    std::string id, path, device;
    int64_t max_seqs = 0, max_batch_tokens = 0, context = 0;
    bool no_wait = false;
    CLI::Option *device_opt = nullptr, *max_seqs_opt = nullptr, *max_batch_tokens_opt = nullptr,
                *context_opt = nullptr;
  };
  struct TenantOptions {
    std::string name;
    std::vector<std::string> keys, key_hashes, models;
    double weight = 0, rate = 0, compile = 0, kv_max_fraction = 0, price_in = 0, price_out = 0;
    int64_t max_concurrent = 0, max_queue = 0, kv_reserved = 0;
    std::string cache_group;
    bool replace = false;
    CLI::Option *weight_opt = nullptr, *rate_opt = nullptr, *compile_opt = nullptr,
                *kv_max_fraction_opt = nullptr, *price_in_opt = nullptr, *price_out_opt = nullptr,
                *max_concurrent_opt = nullptr, *max_queue_opt = nullptr, *kv_reserved_opt = nullptr,
                *cache_group_opt = nullptr;
  };
  struct GenerateOptions {
    std::string model, key, prompt;
    bool chat = false;
    int64_t max_tokens = 0, seed = 0;
    double temperature = 0;
    std::vector<std::string> stop;
    CLI::Option *max_tokens_opt = nullptr, *seed_opt = nullptr, *temperature_opt = nullptr;
  };

  LoadOptions load_;
  std::string unload_id_;
  bool unload_wait_ = false;
  std::string tenant_name_;  // get, delete
  TenantOptions put_;
  GenerateOptions generate_;

  CLI::App* models_list_ = nullptr;
  CLI::App* models_load_ = nullptr;
  CLI::App* models_unload_ = nullptr;
  CLI::App* tenants_list_ = nullptr;
  CLI::App* tenants_get_ = nullptr;
  CLI::App* tenants_put_ = nullptr;
  CLI::App* tenants_delete_ = nullptr;
  CLI::App* generate_cmd_ = nullptr;
};

}  // namespace tokenmill::cli
