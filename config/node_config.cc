#include "config/node_config.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <map>
#include <utility>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "config/table_reader.h"
#include "config/value_parsers.h"

namespace tokenmill::config {
namespace {

// A config file is a few kilobytes; anything this large is the wrong file.
constexpr off_t kMaxConfigBytes = 16 << 20;

// SHA-256 of the empty string: a token hash that any empty bearer matches.
constexpr std::string_view kEmptySha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// unix(7): sun_path holds 108 bytes including the terminating NUL.
constexpr size_t kMaxSocketPathBytes = 107;

StringCheck FromStatus(absl::Status (*check)(std::string_view)) {
  return [check](std::string_view v) { return std::string(check(v).message()); };
}

StringCheck NameCheck(bool allow_colon) {
  return [allow_colon](std::string_view v) {
    return std::string(CheckName(v, allow_colon).message());
  };
}

// "" (off) or a listen address.
std::string ListenCheck(std::string_view v) {
  return v.empty() ? "" : std::string(CheckListenAddress(v).message());
}

std::string SocketPathCheck(std::string_view v) {
  if (absl::Status s = CheckAbsolutePath(v); !s.ok()) return std::string(s.message());
  if (v.size() > kMaxSocketPathBytes) {
    return absl::StrCat("must be at most ", kMaxSocketPathBytes,
                        " bytes long (the unix socket address limit)");
  }
  return "";
}

std::string CurrencyCheck(std::string_view v) {
  const bool ok =
      v.size() == 3 && std::all_of(v.begin(), v.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
  return ok ? "" : "must be a 3-letter upper-case currency code like \"USD\"";
}

std::string BlockTokensCheck(int64_t v) {
  const bool power_of_two = v >= 1 && v <= 256 && (v & (v - 1)) == 0;
  return power_of_two ? "" : "must be a power of two from 1 to 256";
}

// Names that must be unique across the entries of an array of tables; the
// first use wins and every later one is reported.
class UniqueNames {
 public:
  explicit UniqueNames(std::string what) : what_(std::move(what)) {}

  void Claim(const toml::node* node, ProblemList& problems) {
    if (node == nullptr || !node->is_string()) return;
    const std::string& name = node->as_string()->get();
    const auto [it, inserted] = first_line_.emplace(name, node->source().begin.line);
    if (!inserted) {
      problems.Add(node->source().begin, absl::StrCat(what_, " \"", absl::CHexEscape(name),
                                                      "\" is already used at line ", it->second));
    }
  }

 private:
  std::string what_;
  std::map<std::string, uint32_t> first_line_;
};

// State shared by the entries of the arrays of tables.
struct CrossChecks {
  UniqueNames device_matches{"[[device]].match"};
  UniqueNames model_ids{"[[model]].id"};
  UniqueNames tenant_names{"[[tenant]].name"};
  UniqueNames api_keys{"[[tenant]].api_keys_sha256 entry"};
};

void ReadNode(TableReader& r, NodeSection& node) {
  r.String("name", &node.name, NameCheck(/*allow_colon=*/false));
  r.Path("data_dir", &node.data_dir, FromStatus(CheckAbsolutePath));
  const bool has_roots = r.Peek("model_roots") != nullptr;
  std::vector<std::string> roots;
  r.StringArray("model_roots", &roots, FromStatus(CheckAbsolutePath));
  if (has_roots) node.model_roots.emplace(roots.begin(), roots.end());
  std::vector<std::string> plugins;
  r.StringArray("device_plugins", &plugins, FromStatus(CheckAbsolutePath));
  node.device_plugins.assign(plugins.begin(), plugins.end());
  r.Duration("drain_timeout", &node.drain_timeout);
}

// "" (none) or the SHA-256 of a non-empty admin token.
std::string ControlTokenCheck(std::string_view v) {
  if (v.empty()) return "";
  if (!CheckSha256Hex(v).ok()) {
    return "must be 64 lowercase hex characters, the SHA-256 of the admin token "
           "(printf %s TOKEN | sha256sum)";
  }
  if (v == kEmptySha256) return "is the SHA-256 of an empty token; choose a real token";
  return "";
}

void ReadApi(TableReader& r, ApiSection& api, ProblemList& problems) {
  r.String("socket", &api.socket, SocketPathCheck);
  r.SocketMode("socket_mode", &api.socket_mode);
  r.String("tcp", &api.tcp, ListenCheck);
  r.String("control_tcp", &api.control_tcp, ListenCheck);
  r.String("control_token_sha256", &api.control_token_sha256, ControlTokenCheck);
  r.ByteCount("max_body_bytes", &api.max_body_bytes, 1024, UINT64_MAX);
  r.ByteCount("max_header_bytes", &api.max_header_bytes, 1024, 1 << 20);
  r.Duration("idle_timeout", &api.idle_timeout);
  r.Uint32("max_connections", &api.max_connections, IntegerAtLeast(1));
  r.Uint32("socket_max_connections", &api.socket_max_connections, IntegerAtLeast(1));
  r.Uint32("control_tcp_max_connections", &api.control_tcp_max_connections, IntegerAtLeast(1));
  r.ByteCount("max_buffered_output_bytes", &api.max_buffered_output_bytes, 64 << 10, UINT64_MAX);

  // A control port without a token would be the open control API again.
  const toml::node* control_tcp = r.Peek("control_tcp");
  if (control_tcp != nullptr && !api.control_tcp.empty()) {
    const toml::node* token = r.Peek("control_token_sha256");
    const bool no_token =
        token == nullptr || (token->is_string() && token->as_string()->get().empty());
    if (no_token) {
      problems.Add(control_tcp->source().begin,
                   "[api].control_tcp needs [api].control_token_sha256, the SHA-256 of the "
                   "admin token its clients must send as \"Authorization: Bearer TOKEN\"");
    }
    // Port 0 (any free port) gives each listener a port of its own.
    if (api.control_tcp == api.tcp && !api.tcp.ends_with(":0")) {
      problems.Add(control_tcp->source().begin,
                   "[api].control_tcp must differ from [api].tcp: clients and operators get "
                   "separate listeners");
    }
  }
}

void ReadMetrics(TableReader& r, MetricsSection& metrics) {
  r.String("listen", &metrics.listen, ListenCheck);
  r.Duration("device_sample_interval", &metrics.device_sample_interval);
  r.String("compat", &metrics.compat, [](std::string_view v) -> std::string {
    if (v.empty() || v == "vllm") return "";
    return "must be \"\" (tokenmill names only) or \"vllm\" (also vLLM's metric names)";
  });
}

void ReadStorage(TableReader& r, StorageSection& storage) {
  r.DurabilityLevel("durability", &storage.durability);
}

void ReadScheduler(TableReader& r, SchedulerSection& s) {
  r.Uint32("block_tokens", &s.block_tokens, BlockTokensCheck);
  r.Uint32("max_batch_tokens", &s.max_batch_tokens, IntegerAtLeast(1));
  r.Uint32("max_seqs", &s.max_seqs, IntegerAtLeast(1));
  r.Number("vtc_input_weight", &s.vtc_input_weight, NumberAbove(0));
  r.Number("vtc_output_weight", &s.vtc_output_weight, NumberAbove(0));
}

void ReadCost(TableReader& r, CostSection& c) {
  r.String("currency", &c.currency, CurrencyCheck);
  r.Number("capex", &c.capex, NumberAtLeast(0));
  r.Number("depreciation_years", &c.depreciation_years, NumberAbove(0));
  r.Number("power_usd_per_kwh", &c.power_usd_per_kwh, NumberAtLeast(0));
  r.Number("pue", &c.pue, NumberAtLeast(1));
  r.Number("network_usd_per_hour", &c.network_usd_per_hour, NumberAtLeast(0));
  r.Number("debt_service_usd_per_hour", &c.debt_service_usd_per_hour, NumberAtLeast(0));
  r.Number("other_usd_per_hour", &c.other_usd_per_hour, NumberAtLeast(0));
  r.Number("prefill_token_weight", &c.prefill_token_weight, NumberAbove(0));
}

void ReadDevice(TableReader& r, DeviceConfig& d, CrossChecks& cross, ProblemList& problems) {
  r.Required("match");
  r.String("match", &d.match, FromStatus(CheckDevicePattern));
  r.Number("cost_weight", &d.cost_weight, NumberAtLeast(0));
  r.KvMemory("kv_memory", &d.kv_memory);
  r.OptionalNumber("watts", &d.watts, NumberAbove(0));
  r.Uint32("threads", &d.threads, [&d](int64_t v) -> std::string {
    if (v > 4096) return "must be at most 4096";
    return v == 0 || d.match == "cpu" ? "" : "applies to match = \"cpu\" only";
  });
  if (!d.match.empty()) cross.device_matches.Claim(r.Peek("match"), problems);
}

void ReadModel(TableReader& r, ModelConfig& m, CrossChecks& cross, ProblemList& problems) {
  r.Required("id");
  r.Required("path");
  r.String("id", &m.id, NameCheck(/*allow_colon=*/true));
  r.Path("path", &m.path, FromStatus(CheckAbsolutePath));
  r.String("device", &m.device, FromStatus(CheckDeviceChoice));
  r.OptionalUint32("max_seqs", &m.max_seqs, IntegerAtLeast(1));
  r.OptionalUint32("max_batch_tokens", &m.max_batch_tokens, IntegerAtLeast(1));
  r.OptionalUint32("context", &m.context, IntegerAtLeast(1));
  r.Number("price_input_per_mtok", &m.price_input_per_mtok, NumberAtLeast(0));
  r.Number("price_output_per_mtok", &m.price_output_per_mtok, NumberAtLeast(0));
  if (!m.id.empty()) cross.model_ids.Claim(r.Peek("id"), problems);
}

void ReadTenant(TableReader& r, TenantConfig& t, CrossChecks& cross, ProblemList& problems) {
  r.Required("name");
  r.String("name", &t.name, FromStatus(CheckTenantName));
  r.StringArray("api_keys_sha256", &t.api_keys_sha256, FromStatus(CheckSha256Hex));
  r.Number("weight", &t.weight, NumberAbove(0));
  r.Uint64("kv_reserved_blocks", &t.kv_reserved_blocks);
  r.Number("kv_max_fraction", &t.kv_max_fraction, [](double v) -> std::string {
    return v > 0 && v <= 1 ? "" : "must be above 0 and at most 1";
  });
  r.Number("rate_limit_tokens_per_s", &t.rate_limit_tokens_per_s, NumberAtLeast(0));
  r.Number("schema_compile_s_per_min", &t.schema_compile_s_per_min, NumberAtLeast(0));
  r.Uint32("max_concurrent", &t.max_concurrent);
  r.Uint32("max_queue", &t.max_queue);
  r.String("cache_group", &t.cache_group, [](std::string_view v) {
    return v.empty() ? "" : std::string(CheckTenantName(v).message());
  });
  r.StringArray("models", &t.models, NameCheck(/*allow_colon=*/true));
  r.Number("price_input_per_mtok", &t.price_input_per_mtok, NumberAtLeast(0));
  r.Number("price_output_per_mtok", &t.price_output_per_mtok, NumberAtLeast(0));

  if (!t.name.empty()) cross.tenant_names.Claim(r.Peek("name"), problems);
  // Only well-formed hashes are claimed so that a bad one is reported once.
  if (const toml::node* keys = r.Peek("api_keys_sha256"); keys != nullptr && keys->is_array()) {
    for (const toml::node& key : *keys->as_array()) {
      if (key.is_string() && CheckSha256Hex(key.as_string()->get()).ok()) {
        cross.api_keys.Claim(&key, problems);
      }
    }
  }
}

// One top-level name: a [section] or an array of [[entries]].
struct SectionSpec {
  std::string_view name;
  bool array;
  void (*read)(TableReader&, NodeConfig&, CrossChecks&, ProblemList&);
};

constexpr SectionSpec kSections[] = {
    {"node", false,
     [](TableReader& r, NodeConfig& c, CrossChecks&, ProblemList&) { ReadNode(r, c.node); }},
    {"api", false,
     [](TableReader& r, NodeConfig& c, CrossChecks&, ProblemList& p) { ReadApi(r, c.api, p); }},
    {"metrics", false,
     [](TableReader& r, NodeConfig& c, CrossChecks&, ProblemList&) { ReadMetrics(r, c.metrics); }},
    {"storage", false,
     [](TableReader& r, NodeConfig& c, CrossChecks&, ProblemList&) { ReadStorage(r, c.storage); }},
    {"scheduler", false,
     [](TableReader& r, NodeConfig& c, CrossChecks&, ProblemList&) {
       ReadScheduler(r, c.scheduler);
     }},
    {"cost", false,
     [](TableReader& r, NodeConfig& c, CrossChecks&, ProblemList&) { ReadCost(r, c.cost); }},
    {"device", true,
     [](TableReader& r, NodeConfig& c, CrossChecks& x, ProblemList& p) {
       ReadDevice(r, c.devices.emplace_back(), x, p);
     }},
    {"model", true,
     [](TableReader& r, NodeConfig& c, CrossChecks& x, ProblemList& p) {
       ReadModel(r, c.models.emplace_back(), x, p);
     }},
    {"tenant", true,
     [](TableReader& r, NodeConfig& c, CrossChecks& x, ProblemList& p) {
       ReadTenant(r, c.tenants.emplace_back(), x, p);
     }},
};

std::string Heading(const SectionSpec& spec) {
  return spec.array ? absl::StrCat("[[", Absl(spec.name), "]]")
                    : absl::StrCat("[", Absl(spec.name), "]");
}

// A top-level name the parser does not know: a misspelt section, or a key
// written above the first [section] that belongs inside one.
void ReportUnknownTopLevel(const toml::key& key, const toml::node& node, ProblemList& problems) {
  std::vector<std::string> names;
  for (const SectionSpec& spec : kSections) names.emplace_back(spec.name);
  const std::string near = ClosestKey(key.str(), names);
  const auto spec = std::find_if(std::begin(kSections), std::end(kSections),
                                 [&](const SectionSpec& s) { return s.name == near; });
  if (node.is_table() || (node.is_array() && node.as_array()->is_array_of_tables())) {
    const bool array = !node.is_table();
    std::string message = array ? absl::StrCat("unknown table [[", Absl(key.str()), "]]")
                                : absl::StrCat("unknown table [", Absl(key.str()), "]");
    if (!near.empty()) absl::StrAppend(&message, " (did you mean ", Heading(*spec), "?)");
    return problems.Add(node.source().begin, std::move(message));
  }
  std::string message = absl::StrCat("unknown key '", Absl(key.str()), "' at the top level");
  std::vector<std::string> homes;
  for (const std::string& known : KnownKeys()) {
    const size_t dot = known.find('.');
    if (known.substr(dot + 1) == key.str()) homes.push_back(known.substr(0, dot));
  }
  if (homes.size() == 1) {
    const auto home = std::find_if(std::begin(kSections), std::end(kSections),
                                   [&](const SectionSpec& s) { return s.name == homes[0]; });
    absl::StrAppend(&message, " (it belongs in ", Heading(*home), ")");
  }
  problems.Add(key.source().begin, std::move(message));
}

std::string DefaultNodeName() {
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return "localhost";
  return host;
}

std::string Sha256Hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &size, EVP_sha256(), nullptr) != 1) return "";
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(size)));
}

// Closes a file descriptor when it goes out of scope.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status ReadError(const std::filesystem::path& path, int error) {
  const std::string message =
      absl::StrCat("cannot read config file ", path.string(), ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::FailedPreconditionError(message);
  }
}

absl::StatusOr<NodeConfig> Parse(std::string_view toml_text, std::string_view source) {
  NodeConfig config;
  config.source = std::string(source);
  config.digest = Sha256Hex(toml_text);
  config.node.name = DefaultNodeName();

  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(Absl(source), ":", e.source().begin.line, ":",
                                                   e.source().begin.column, ": ",
                                                   Absl(e.description())));
  }

  ProblemList problems;
  CrossChecks cross;
  for (const auto& [key, node] : root) {
    // By name, not through the binding: clang before 16 cannot capture one.
    const std::string_view name = key.str();
    const auto spec = std::find_if(std::begin(kSections), std::end(kSections),
                                   [&](const SectionSpec& s) { return s.name == name; });
    if (spec == std::end(kSections)) {
      ReportUnknownTopLevel(key, node, problems);
      continue;
    }
    if (!spec->array) {
      if (!node.is_table()) {
        problems.Add(node.source().begin,
                     absl::StrCat(Heading(*spec), " must be a table, got ", DescribeNode(node)));
        continue;
      }
      TableReader reader(*node.as_table(), Heading(*spec), problems);
      spec->read(reader, config, cross, problems);
      reader.Finish();
      continue;
    }
    // `device = []` is an empty array, not an array of tables, and is fine.
    const toml::array* entries = node.as_array();
    if (entries == nullptr || (!entries->empty() && !entries->is_array_of_tables())) {
      problems.Add(node.source().begin,
                   absl::StrCat(Absl(spec->name), " must be an array of tables written as ",
                                Heading(*spec), " sections, got ", DescribeNode(node)));
      continue;
    }
    for (const toml::node& entry : *entries) {
      TableReader reader(*entry.as_table(), Heading(*spec), problems);
      spec->read(reader, config, cross, problems);
      reader.Finish();
    }
  }
  if (!problems.empty()) return absl::InvalidArgumentError(problems.Format(source));
  return config;
}

}  // namespace

absl::StatusOr<NodeConfig> ParseConfig(std::string_view toml_text, std::string_view source) {
  // toml++ and the standard library throw (bad_alloc, length_error); no
  // exception may leave this module.
  try {
    return Parse(toml_text, source);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(Absl(source), ": cannot parse config: ", e.what()));
  }
}

absl::StatusOr<NodeConfig> LoadConfigFile(const std::filesystem::path& path) {
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ReadError(path, errno);
  struct stat st = {};
  if (fstat(fd.get(), &st) != 0) return ReadError(path, errno);
  if (S_ISDIR(st.st_mode)) return ReadError(path, EISDIR);
  if (st.st_size > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path.string(), " is ",
                                                   st.st_size, " bytes; the limit is ",
                                                   kMaxConfigBytes, ": is it the right file?"));
  }
  std::string text;
  char buffer[64 << 10];
  while (true) {
    const ssize_t n = read(fd.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ReadError(path, errno);
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > static_cast<size_t>(kMaxConfigBytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path.string(), " grew past ", kMaxConfigBytes, " bytes"));
    }
  }
  return ParseConfig(text, path.string());
}

std::vector<std::string> KnownKeys() {
  std::vector<std::string> keys;
  for (const SectionSpec& spec : kSections) {
    // Reading an empty table names every key of the section; the problems it
    // finds (missing required keys) are irrelevant here.
    const toml::table empty;
    ProblemList ignored;
    CrossChecks cross;
    NodeConfig scratch;
    TableReader reader(empty, Heading(spec), ignored);
    spec.read(reader, scratch, cross, ignored);
    for (const std::string& key : reader.known_keys()) {
      keys.push_back(absl::StrCat(Absl(spec.name), ".", key));
    }
  }
  return keys;
}

const DeviceConfig* FindDeviceConfig(const NodeConfig& config, std::string_view device_id) {
  const DeviceConfig* pattern = nullptr;
  for (const DeviceConfig& d : config.devices) {
    if (d.match == device_id) return &d;
    if (d.match.ends_with(":*") && device_id.starts_with(d.match.substr(0, d.match.size() - 1))) {
      pattern = &d;
    }
  }
  return pattern;
}

std::vector<std::filesystem::path> ModelRoots(const NodeConfig& config) {
  if (config.node.model_roots) return *config.node.model_roots;
  std::vector<std::filesystem::path> roots = {config.node.data_dir / "models"};
  for (const ModelConfig& m : config.models) {
    std::filesystem::path path = m.path.lexically_normal();
    if (!path.has_filename()) path = path.parent_path();  // "/models/qwen2/"
    std::filesystem::path dir = path.parent_path();
    if (!dir.empty() && std::find(roots.begin(), roots.end(), dir) == roots.end()) {
      roots.push_back(std::move(dir));
    }
  }
  return roots;
}

}  // namespace tokenmill::config
