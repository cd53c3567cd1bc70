// Fuzzes ParseConfig: the node's TOML configuration as tokenmilld reads it at
// start and on SIGHUP. A config that parses is compared with itself and with
// the default config, as a reload does.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/node_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = tokenmill::config::ParseConfig(text, "fuzz.toml");
  if (!config.ok()) return 0;
  if (!tokenmill::config::RestartRequiredChanges(*config, *config).empty()) __builtin_trap();
  auto defaults = tokenmill::config::ParseConfig("", "empty.toml");
  if (defaults.ok()) (void)tokenmill::config::RestartRequiredChanges(*defaults, *config);
  return 0;
}
