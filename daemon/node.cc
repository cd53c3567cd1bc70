#include "daemon/node.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/api_errors.h"
#include "daemon/device_setup.h"
#include "daemon/runtime_setup.h"
#include "devices/discovery.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {
namespace {

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// tokenmill_node_ready: 1 while the node admits work, read at scrape time so
// drains from any source show at once.
class NodeStateCollector : public prometheus::Collectable {
 public:
  explicit NodeStateCollector(const NodeState& state) : state_(state) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    auto gauge = [](std::string name, std::string help, double value,
                    std::vector<prometheus::ClientMetric::Label> labels = {}) {
      prometheus::MetricFamily family;
      family.name = std::move(name);
      family.help = std::move(help);
      family.type = prometheus::MetricType::Gauge;
      prometheus::ClientMetric metric;
      metric.label = std::move(labels);
      metric.gauge.value = value;
      family.metric.push_back(std::move(metric));
      return family;
    };
    std::vector<prometheus::MetricFamily> out;
    out.push_back(gauge("tokenmill_node_ready",
                        "1 when the node admits new work, 0 while starting or draining",
                        state_.ready() ? 1.0 : 0.0));
    // Alerts on not-ready stay quiet during a planned drain by this one.
    out.push_back(gauge("tokenmill_node_draining",
                        "1 while the node drains (POST /control/v1/drain, tokenmill drain, stop)",
                        state_.draining() ? 1.0 : 0.0));
    // The node's name ([node] name) for joins: target labels tell scrapes
    // apart, this tells which tokenmill node a target is.
    out.push_back(gauge("tokenmill_node_info", "The node's [node] name; the value is always 1", 1.0,
                        {{"node_name", state_.config()->node.name}}));
    return out;
  }

 private:
  const NodeState& state_;
};

// tokenmill_store_writable (0 while the store refuses writes, e.g. on a full
// disk) and tokenmill_store_accepted_losses_total, read at scrape time.
class StoreCollector : public prometheus::Collectable {
 public:
  StoreCollector(const storage::MeterStore& store, size_t accepted_losses)
      : store_(store), accepted_losses_(accepted_losses) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily writable;
    writable.name = "tokenmill_store_writable";
    writable.help = "1 while the metering store takes writes, 0 while it refuses them (full disk)";
    writable.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric w;
    w.gauge.value = store_.WriteHealth().ok() ? 1.0 : 0.0;
    writable.metric.push_back(std::move(w));
    prometheus::MetricFamily losses;
    losses.name = "tokenmill_store_accepted_losses_total";
    losses.help =
        "Losses of acknowledged metering writes accepted with --accept-store-loss on this data dir";
    losses.type = prometheus::MetricType::Counter;
    prometheus::ClientMetric l;
    l.counter.value = static_cast<double>(accepted_losses_);
    losses.metric.push_back(std::move(l));
    return {std::move(writable), std::move(losses)};
  }

 private:
  const storage::MeterStore& store_;
  const size_t accepted_losses_;
};

void LogStoreLine(storage::StoreLogLevel level, std::string_view line) {
  switch (level) {
    case storage::StoreLogLevel::kDebug:
      spdlog::debug("{}", line);
      break;
    case storage::StoreLogLevel::kInfo:
      spdlog::info("{}", line);
      break;
    case storage::StoreLogLevel::kWarn:
      spdlog::warn("{}", line);
      break;
    case storage::StoreLogLevel::kError:
      spdlog::error("{}", line);
      break;
  }
}

// The socket's directory: systemd's RuntimeDirectory= makes it in production;
// for other set-ups create it, owner-only-writable.
absl::Status EnsureSocketDir(const std::string& socket_path) {
  std::filesystem::path dir = std::filesystem::path(socket_path).parent_path();
  if (dir.empty()) return absl::OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create socket directory ", dir.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

// "host:port" with the port as bound (for port 0); IPv6 hosts in brackets.
std::string WithPort(const std::string& listen, uint16_t port) {
  auto host = http::SplitHostPort(listen);
  std::string name = host.ok() ? host->first : "127.0.0.1";
  if (name.find(':') != std::string::npos) return absl::StrCat("[", name, "]:", port);
  return absl::StrCat(name, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Node>> Node::Start(config::NodeConfig config,
                                                  NodeStartOptions options) {
  std::unique_ptr<Node> node(new Node());
  node->state_ = std::make_unique<NodeState>(std::move(config), std::chrono::system_clock::now());
  auto cfg = node->state_->config();

  node->registry_ = std::make_shared<prometheus::Registry>();
  telemetry::AddBuildInfo(*node->registry_);
  node->store_errors_ = &prometheus::BuildCounter()
                             .Name("tokenmill_store_errors_total")
                             .Help("Failed metering store operations, by operation")
                             .Register(*node->registry_);

  storage::MeterStoreOptions store_options;
  store_options.dir = cfg->node.data_dir;
  store_options.durability = cfg->storage.durability == config::Durability::kPower
                                 ? storage::Durability::kPower
                                 : storage::Durability::kProcess;
  auto* store_errors = node->store_errors_;
  store_options.on_error = [store_errors](std::string_view op) {
    store_errors->Add({{"op", std::string(op)}}).Increment();
  };
  store_options.log = LogStoreLine;
  store_options.log_debug = spdlog::should_log(spdlog::level::debug);
  store_options.accept_loss = options.accept_store_loss;
  auto store = storage::MeterStore::Open(store_options);
  if (!store.ok()) {
    if (store.status().code() == absl::StatusCode::kDataLoss) {
      return absl::DataLossError(absl::StrCat(
          store.status().message(),
          ". Restore the data dir from a backup, or start tokenmilld once with "
          "--accept-store-loss to open the store with what is left (the loss is logged, counted "
          "in tokenmill_store_accepted_losses_total and shown in /control/v1/node)"));
    }
    return store.status();
  }
  node->store_ = std::move(*store);
  spdlog::info("store_opened dir={} durability={}", cfg->node.data_dir.string(),
               config::ToString(cfg->storage.durability));
  if (const auto& loss = node->store_->accepted_loss()) {
    spdlog::error(
        "store_loss_accepted kind={} file={} offset={} expected_sequence={} "
        "recovered_sequence={} lost_writes={} saved_copy={} detail=\"{}\"",
        loss->kind, loss->file, loss->offset, loss->expected_sequence, loss->recovered_sequence,
        loss->lost_writes, loss->saved_copy.empty() ? "none" : loss->saved_copy, loss->detail);
  } else if (options.accept_store_loss) {
    spdlog::info("store_accept_loss_unused reason=\"the store lost nothing\"");
  }
  auto losses = node->store_->AcceptedLosses();
  if (!losses.ok()) return losses.status();
  node->store_losses_ = std::move(*losses);
  node->store_collector_ =
      std::make_shared<StoreCollector>(*node->store_, node->store_losses_.size());

  devices::DiscoveryOptions discovery;
  discovery.watts_for = [cfg](const std::string& id) -> std::optional<double> {
    const config::DeviceConfig* d = config::FindDeviceConfig(*cfg, id);
    return d != nullptr ? d->watts : std::nullopt;
  };
  node->backends_ = MakeBackendRegistry(*cfg);
  auto found = node->backends_->DiscoverAll(discovery);
  if (!found.ok()) return found.status();
  node->devices_ = std::move(found->devices);
  // No GPU is a normal case; say why once so an operator who expected one knows.
  if (!found->cuda_unavailable_reason.empty()) {
    spdlog::info("cuda_unavailable reason=\"{}\"", found->cuda_unavailable_reason);
  }
  if (!found->nvml_unavailable_reason.empty()) {
    spdlog::warn("nvml_unavailable reason=\"{}\"", found->nvml_unavailable_reason);
  }
  std::vector<devices::Device*> device_ptrs;
  std::vector<const devices::Device*> const_device_ptrs;
  for (const auto& device : node->devices_) {
    const auto& info = device->Info();
    spdlog::info("device_found id={} name=\"{}\" memory_bytes={}", info.id, info.name,
                 info.memory_total_bytes);
    device_ptrs.push_back(device.get());
    const_device_ptrs.push_back(device.get());
  }

  node->sampler_ = std::make_unique<telemetry::DeviceSampler>(*node->registry_, device_ptrs,
                                                              cfg->metrics.device_sample_interval);
  node->process_collector_ = telemetry::MakeProcessCollector();
  node->state_collector_ = std::make_shared<NodeStateCollector>(*node->state_);

  NodeState::Addresses addresses;
  if (!cfg->metrics.listen.empty()) {
    auto server = telemetry::MetricsServer::Start(cfg->metrics.listen);
    if (!server.ok()) return server.status();
    node->metrics_server_ = std::move(*server);
    node->metrics_server_->Register(node->registry_);
    node->metrics_server_->Register(node->process_collector_);
    node->metrics_server_->Register(node->state_collector_);
    node->metrics_server_->Register(node->store_collector_);
    addresses.metrics = WithPort(cfg->metrics.listen, node->metrics_server_->port());
    spdlog::info("metrics_listening address={}", addresses.metrics);
  }

  telemetry::DeviceSampler* sampler = node->sampler_.get();
  node->control_api_ = std::make_unique<ControlApi>(*node->state_, const_device_ptrs,
                                                    [sampler] { return sampler->Latest(); });
  Node* self_for_store = node.get();
  node->control_api_->set_store_source([self_for_store] { return self_for_store->StoreJson(); });
  const devices::BackendRegistry* backends = node->backends_.get();
  node->control_api_->set_details_source(
      [backends](const devices::Device& d) { return backends->DetailsJson(d); });
  node->control_api_->set_capacity_source(
      [self_for_store] { return self_for_store->CapacityJson(); });

  // Tenants and model instances: the config's, then what the API made before.
  node->tenants_ = std::make_unique<tenants::TenantRegistry>();
  if (auto status = RestoreTenants(*cfg, *node->store_, *node->tenants_); !status.ok()) {
    return status;
  }

  // Cost, metering and the serving families.
  auto cost_model = metering::CostModel::Create(CostInputsFrom(*cfg, device_ptrs));
  if (!cost_model.ok()) return cost_model.status();
  node->cost_ledger_ = std::make_unique<metering::CostLedger>(*cost_model, node->clock_.Now());
  Node* raw = node.get();
  node->runtime_metrics_ = std::make_unique<telemetry::RuntimeMetrics>(
      *node->registry_, [raw] { return raw->Snapshot(); },
      cfg->metrics.compat == "vllm" ? telemetry::MetricNames::kTokenmillAndVllm
                                    : telemetry::MetricNames::kTokenmill);
  telemetry::RuntimeMetrics* metrics = node->runtime_metrics_.get();
  // A removed tenant's series go once its last request has ended.
  node->tenants_->OnRemoved([metrics](const std::string& name) {
    metrics->RemoveTenant(name);
    spdlog::info("tenant_metrics_removed tenant={}", name);
  });
  if (node->metrics_server_) {
    node->metrics_server_->Register(node->runtime_metrics_->snapshot_collectable());
  }
  std::vector<std::string> device_ids;
  for (const devices::Device* d : device_ptrs) device_ids.push_back(d->Info().id);
  metering::MeteringSources sources;
  metering::CostModelPtr model_now = *cost_model;
  sources.watts = [sampler, device_ids, model_now](const std::string& id) -> std::optional<double> {
    const auto samples = sampler->Latest();
    for (size_t i = 0; i < device_ids.size() && i < samples.size(); ++i) {
      if (device_ids[i] == id && samples[i].power_watts) return samples[i].power_watts;
    }
    for (const auto& d : model_now->inputs().devices) {
      if (d.id == id) return d.watts;
    }
    return std::nullopt;
  };
  sources.energy_joules = [sampler, device_ids] {
    std::map<std::string, double> out;
    const auto samples = sampler->Latest();
    for (size_t i = 0; i < device_ids.size() && i < samples.size(); ++i) {
      if (samples[i].energy_joules) out[device_ids[i]] = *samples[i].energy_joules;
    }
    return out;
  };
  // With durability = "power" every commit is an fsync: the steps of all
  // instances go through one writer thread that commits them in groups.
  metering::MeteringOptions metering_options;
  metering_options.group_commit = cfg->storage.durability == config::Durability::kPower;
  node->metering_ = std::make_unique<metering::Metering>(*node->store_, *node->cost_ledger_,
                                                         node->runtime_metrics_.get(), node->clock_,
                                                         std::move(sources), metering_options);
  // Prices are values Metering keeps: the models' now and on SIGHUP, the
  // tenants' now and on every change of a tenant (API or SIGHUP).
  node->metering_->SetModelPrices(ModelPricesFrom(*cfg));
  node->tenants_->OnChange([raw] { raw->PushTenantPrices(); });
  node->PushTenantPrices();
  auto recovered = node->metering_->RecoverInterrupted();
  if (!recovered.ok()) return recovered.status();
  if (*recovered > 0) {
    spdlog::warn(
        "requests_interrupted count={} reason=\"the last run stopped without finishing "
        "them; their tokens are in the ledger\"",
        *recovered);
  }
  node->metering_->StartTicker(std::chrono::seconds(1));

  auto manager_options = InstanceManagerOptionsFrom(*cfg, device_ptrs, sampler);
  metering::Metering* metering = node->metering_.get();
  manager_options.usage_observer = [metering](const std::string& model, const std::string& device) {
    return metering->ObserverFor(model, device);
  };
  manager_options.model_roots = config::ModelRoots(*cfg);
  manager_options.backends = node->backends_.get();
  manager_options.observer = [raw](const runtime::InstanceEvent& event) {
    raw->OnInstanceEvent(event);
  };
  auto instances = runtime::InstanceManager::Create(device_ptrs, *node->tenants_, node->clock_,
                                                    std::move(manager_options));
  if (!instances.ok()) return instances.status();
  node->instances_ = std::move(*instances);
  for (const std::string& reason : node->instances_->unusable_devices()) {
    spdlog::warn("device_unusable reason=\"{}\"", reason);
  }
  for (const auto& root : config::ModelRoots(*cfg)) {
    spdlog::info("model_root path=\"{}\"", root.string());
  }
  // The models API exists before the first load: it logs and stores what
  // the loads do.
  node->models_api_ = std::make_unique<ModelsApi>(*node->instances_, node->store_.get());
  std::vector<runtime::ModelLoadSpec> config_models;
  for (const auto& m : cfg->models) config_models.push_back(ModelSpecFromConfig(m));
  node->models_api_->Restore(config_models);
  // Readiness waits for these first loads (config and stored API models).
  std::set<std::string> startup_models;
  for (const auto& info : node->instances_->List()) startup_models.insert(info.spec.id);
  runtime::InstanceManager* manager = node->instances_.get();
  node->control_api_->set_startup_loading_source([manager, startup_models] {
    size_t loading = 0;
    for (const auto& info : manager->List()) {
      if (startup_models.contains(info.spec.id) && info.state == runtime::InstanceState::kLoading) {
        ++loading;
      }
    }
    return loading;
  });
  node->tenants_api_ =
      std::make_unique<TenantsApi>(*node->tenants_, node->store_.get(), cfg->source);
  node->usage_api_ = std::make_unique<UsageApi>(*node->store_, *node->tenants_, cfg->cost.currency);

  if (auto status = EnsureSocketDir(cfg->api.socket); !status.ok()) return status;
  node->access_ = std::make_unique<ApiAccess>(cfg->api.control_token_sha256);
  // Listener 0 is the socket; the TCP ports follow. Each has its own
  // connection budget, so clients of a port cannot lock operators out.
  http::HttpServerOptions http_options;
  http_options.listeners.push_back({.kind = http::Listener::Kind::kUnix,
                                    .address = cfg->api.socket,
                                    .unix_mode = cfg->api.socket_mode,
                                    .role = http::Listener::Role::kLocal,
                                    .max_connections = cfg->api.socket_max_connections});
  size_t tcp_index = 0;
  size_t control_tcp_index = 0;
  if (!cfg->api.tcp.empty()) {
    tcp_index = http_options.listeners.size();
    http_options.listeners.push_back({.kind = http::Listener::Kind::kTcp,
                                      .address = cfg->api.tcp,
                                      .unix_mode = 0,
                                      .role = http::Listener::Role::kClient,
                                      .max_connections = cfg->api.max_connections});
  }
  if (!cfg->api.control_tcp.empty()) {
    control_tcp_index = http_options.listeners.size();
    http_options.listeners.push_back({.kind = http::Listener::Kind::kTcp,
                                      .address = cfg->api.control_tcp,
                                      .unix_mode = 0,
                                      .role = http::Listener::Role::kControl,
                                      .max_connections = cfg->api.control_tcp_max_connections});
  }
  http_options.max_header_bytes = cfg->api.max_header_bytes;
  http_options.max_body_bytes = cfg->api.max_body_bytes;
  http_options.idle_timeout = cfg->api.idle_timeout;
  http_options.max_buffered_output_bytes = cfg->api.max_buffered_output_bytes;
  Node* self = node.get();
  node->http_server_ = std::make_unique<http::HttpServer>(
      std::move(http_options), [self](http::HttpRequest request, http::ResponseWriterPtr response) {
        self->Route(std::move(request), std::move(response));
      });
  http::HttpServer* server = node->http_server_.get();
  node->ledger_api_ = std::make_unique<LedgerApi>(
      *node->store_, cfg->node.name,
      [server](std::function<void()> fn) { server->Post(std::move(fn)); });
  EncodePool::Options encode_options;
  encode_options.threads = EncodePool::DefaultThreads();
  node->encode_pool_ = std::make_unique<EncodePool>(encode_options);
  spdlog::info("encode_pool_started threads={} max_queued={} max_queued_per_tenant={}",
               encode_options.threads, encode_options.max_queued,
               encode_options.max_queued_per_key);
  node->openai_api_ = std::make_unique<OpenAiApi>(
      *node->tenants_, *node->instances_, *node->encode_pool_,
      [server](std::function<void()> fn) { server->Post(std::move(fn)); });
  telemetry::RuntimeMetrics* runtime_metrics = node->runtime_metrics_.get();
  node->openai_api_->set_rejection_observer(
      [runtime_metrics](const std::string& tenant, const std::string& model) {
        telemetry::RequestObservation o;
        o.tenant = tenant;
        o.model = model;
        o.outcome = "rejected";
        runtime_metrics->ObserveRequest(o);
      });
  if (auto status = node->http_server_->Start(); !status.ok()) return status;
  addresses.socket = cfg->api.socket;
  if (!cfg->api.tcp.empty()) {
    addresses.tcp = WithPort(cfg->api.tcp, node->http_server_->tcp_port(tcp_index));
  }
  if (!cfg->api.control_tcp.empty()) {
    addresses.control_tcp =
        WithPort(cfg->api.control_tcp, node->http_server_->tcp_port(control_tcp_index));
  }
  spdlog::info("api_listening socket={} tcp={} control_tcp={}", addresses.socket,
               addresses.tcp.empty() ? "off" : addresses.tcp,
               addresses.control_tcp.empty() ? "off" : addresses.control_tcp);
  node->state_->set_addresses(std::move(addresses));

  node->state_->set_ready(true);
  return node;
}

Node::~Node() { Stop(); }

void Node::Route(http::HttpRequest request, http::ResponseWriterPtr response) {
  switch (access_->Check(request)) {
    case ApiAccess::Verdict::kServe:
      break;
    case ApiAccess::Verdict::kNotFound:
      SendNotFound(request, *response);
      return;
    case ApiAccess::Verdict::kUnauthorized:
      spdlog::warn("control_unauthorized listener={} peer={} method={} path=\"{}\"",
                   http::ToString(request.origin.role), http::PeerName(request.origin),
                   absl::CHexEscape(request.method), absl::CHexEscape(request.path));
      response->Send(401, "application/json",
                     ErrorBody("unauthorized",
                               "the control API on this port needs \"Authorization: Bearer "
                               "TOKEN\" with the node's admin token"),
                     {{"WWW-Authenticate", "Bearer realm=\"tokenmill-control\""}});
      return;
  }
  if (ChangesControlState(request)) {
    // Who changed the node: the socket's peer process, or the control port's
    // peer address (that one also proved the admin token).
    const auto& origin = request.origin;
    spdlog::info("control_request method={} path=\"{}\" listener={} peer={} pid={} uid={} gid={}",
                 absl::CHexEscape(request.method), absl::CHexEscape(request.path),
                 http::ToString(origin.role), origin.peer.empty() ? "-" : origin.peer,
                 origin.credentials ? std::to_string(origin.credentials->pid) : "-",
                 origin.credentials ? std::to_string(origin.credentials->uid) : "-",
                 origin.credentials ? std::to_string(origin.credentials->gid) : "-");
  }
  if (request.path == "/control/v1/cost") {
    if (request.method != "GET") {
      response->Send(405, "application/json",
                     ErrorBody("method_not_allowed", "use GET on /control/v1/cost"),
                     {{"Allow", "GET"}});
      return;
    }
    SendJson(*response, metering_->CostJson().dump());
    return;
  }
  if (control_api_->Handle(request, response)) return;
  if (models_api_->Handle(request, response)) return;
  if (tenants_api_->Handle(request, response)) return;
  if (usage_api_->Handle(request, response)) return;
  if (ledger_api_->Handle(request, response)) return;
  // The tokenizer endpoints generate nothing: served while draining and
  // while the store cannot write.
  if (request.path == "/tokenize" || request.path == "/detokenize") {
    if (openai_api_->Handle(request, response)) return;
  }
  if (request.path.starts_with("/v1/")) {
    if (state_->draining() && request.method == "POST") {
      SendOpenAiError(*response, absl::UnavailableError(
                                     "the node is draining; send new requests to another node"));
      return;
    }
    // A token is metered before it is sent: no generation while the store
    // cannot write (a full disk); the status names the data dir.
    if (request.method == "POST") {
      if (absl::Status health = store_->WriteHealth(); !health.ok()) {
        SendOpenAiError(*response, health, {{"Retry-After", "5"}});
        return;
      }
    }
    if (openai_api_->Handle(request, response)) return;
  }
  SendNotFound(request, *response);
}

void Node::PushTenantPrices() {
  // Read and pushed under one lock, so that of two changes racing, the last
  // push carries a list read after both.
  absl::MutexLock lock(&tenant_prices_mu_);
  if (metering_ && tenants_) metering_->SetTenantPrices(TenantPricesFrom(tenants_->List()));
}

void Node::Reload(config::NodeConfig next) {
  auto before = state_->config();
  std::vector<std::string> pending = config::RestartRequiredChanges(*before, next);
  if (!pending.empty()) {
    spdlog::warn("config_reload_restart_required settings=\"{}\"", absl::StrJoin(pending, ","));
  }
  spdlog::info("config_reloaded source={} digest={} tenants={}", next.source, next.digest,
               next.tenants.size());
  if (cost_ledger_ && metering_) {
    // Rates and prices change from now on, never for time already closed.
    std::vector<devices::Device*> device_ptrs;
    for (const auto& d : devices_) device_ptrs.push_back(d.get());
    auto model = metering::CostModel::Create(CostInputsFrom(next, device_ptrs));
    if (model.ok()) {
      metering_->SetCostModel(*model);  // closes the interval with the old prices first
      metering_->SetModelPrices(ModelPricesFrom(next));
    } else {
      spdlog::error("cost_not_reloaded error=\"{}\"", model.status().ToString());
    }
  }
  if (tenants_) {
    // Tenants and their prices follow the file from now on.
    std::vector<tenants::TenantPolicy> from_config;
    for (const auto& t : next.tenants) from_config.push_back(TenantPolicyFromConfig(t));
    if (auto status = tenants_->ReplaceConfigTenants(std::move(from_config)); !status.ok()) {
      spdlog::error("tenants_not_reloaded error=\"{}\"", status.ToString());
    }
  }
  state_->set_restart_pending(std::move(pending));
  state_->SetConfig(std::move(next), std::chrono::system_clock::now());
}

void Node::Stop(std::chrono::milliseconds drain_timeout) {
  if (stopped_) return;
  stopped_ = true;
  if (state_) {
    state_->set_draining(true);
    state_->set_ready(false);
  }
  // Reverse of start: no new requests; running ones (and those whose prompt
  // is being encoded) finish, up to the drain timeout; then the encode pool
  // (its jobs hold instances and post to the loop), the loop, the instances;
  // then no new samples, then the store.
  if (instances_) {
    const auto deadline = std::chrono::steady_clock::now() + drain_timeout;
    auto busy = [this] {
      if (openai_api_ && openai_api_->preparing() > 0) return true;
      for (const auto& info : instances_->List()) {
        if (info.stats.running + info.stats.waiting > 0) return true;
      }
      return false;
    };
    if (busy()) spdlog::info("drain_waiting timeout_ms={}", drain_timeout.count());
    while (busy() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (encode_pool_) encode_pool_->Stop();  // waiting requests get 503 on the live loop
  if (http_server_) http_server_->Stop();
  ledger_api_.reset();  // its reader thread reads the store
  if (instances_) instances_->Stop();
  if (metering_) metering_->StopTicker();
  metrics_server_.reset();
  sampler_.reset();
  if (store_) {
    if (auto status = store_->Flush(); !status.ok()) {
      spdlog::error("store_flush_failed error=\"{}\"", status.ToString());
    }
    store_.reset();
    spdlog::info("store_closed");
  }
}

nlohmann::json Node::StoreJson() const {
  nlohmann::json out;
  const absl::Status health = store_ ? store_->WriteHealth() : absl::OkStatus();
  out["writable"] = health.ok();
  out["error"] =
      health.ok() ? nlohmann::json(nullptr) : nlohmann::json(std::string(health.message()));
  out["accepted_losses"] = store_losses_.size();
  if (store_losses_.empty()) {
    out["last_accepted_loss"] = nullptr;
  } else {
    const storage::StoreLoss& l = store_losses_.back();
    out["last_accepted_loss"] = {{"at_unix_ms", l.at_unix_ms},
                                 {"file", l.file},
                                 {"offset", l.offset},
                                 {"kind", l.kind},
                                 {"expected_sequence", l.expected_sequence},
                                 {"recovered_sequence", l.recovered_sequence},
                                 {"lost_writes", l.lost_writes},
                                 {"saved_copy", l.saved_copy},
                                 {"detail", l.detail}};
  }
  // Metered tokens of requests still running (or cut by a crash and not yet
  // recovered): in usage already, in the ledger once they end.
  // A running total the store keeps: no store I/O on the loop thread.
  out["in_flight"] = nullptr;
  if (store_) {
    const storage::UsageCounters inflight = store_->InflightTotal();
    out["in_flight"] = {{"prompt_tokens", inflight.prompt_tokens},
                        {"cached_tokens", inflight.cached_tokens},
                        {"generated_tokens", inflight.generated_tokens},
                        {"cost_nusd", inflight.cost_nusd},
                        {"revenue_nusd", inflight.revenue_nusd}};
  }
  return out;
}

void Node::OnInstanceEvent(const runtime::InstanceEvent& event) {
  if (models_api_) models_api_->Observe(event);
  if (event.kind == runtime::InstanceEventKind::kUnloaded) {
    runtime_metrics_->RemoveModel(event.info.spec.id);
  }
}

telemetry::RuntimeSnapshot Node::Snapshot() const {
  telemetry::RuntimeSnapshot snap;
  if (instances_ == nullptr) return snap;
  // Arena figures first: a model's KV capacity includes its device's free pages.
  std::map<std::string, devices::KvArenaStats> arenas;
  for (const auto& dev : instances_->DeviceStats()) arenas[dev.device] = dev.arena;
  std::map<std::string, telemetry::RuntimeSnapshot::DeviceKv> kv;
  std::map<std::string, uint64_t> block_bytes;  // a device's first instance's block size
  std::map<std::pair<std::string, std::string>, uint64_t> tenant_kv;
  telemetry::RuntimeSnapshot::NodeTotals totals;
  for (const auto& info : instances_->List()) {
    snap.model_states.push_back(
        {info.spec.id, info.device, std::string(runtime::InstanceStateName(info.state))});
    if (info.state != runtime::InstanceState::kReady &&
        info.state != runtime::InstanceState::kDraining) {
      continue;
    }
    const auto& st = info.stats;
    const uint64_t bpb = info.kv_bytes_per_block;
    const devices::KvArenaStats* arena = nullptr;
    if (auto it = arenas.find(info.device); it != arenas.end()) arena = &it->second;
    telemetry::RuntimeSnapshot::Model m;
    m.model = info.spec.id;
    m.device = info.device;
    m.running = st.running;
    m.waiting = st.waiting;
    m.prefix_query_tokens = st.prefix_query_tokens;
    m.prefix_hit_tokens = st.prefix_hit_tokens;
    m.prompt_tokens = st.prompt_tokens + st.cached_tokens;
    m.generated_tokens = st.generated_tokens;
    m.kv_used_bytes = uint64_t{st.kv_blocks_used} * bpb;
    if (arena != nullptr) {
      m.kv_capacity_bytes = (uint64_t{st.kv_pages} + arena->pages_free) * arena->page_bytes;
    }
    snap.models.push_back(std::move(m));
    totals.running += st.running;
    totals.waiting += st.waiting;
    auto& d = kv[info.device];
    d.device = info.device;
    d.used += st.kv_blocks_used;
    d.cached += st.kv_blocks_cached;
    d.free += st.kv_blocks_free;
    d.used_bytes += uint64_t{st.kv_blocks_used} * bpb;
    d.cached_bytes += uint64_t{st.kv_blocks_cached} * bpb;
    if (!block_bytes.contains(info.device)) block_bytes[info.device] = bpb;
    for (const auto& [tenant, blocks] : st.tenant_kv_blocks) {
      tenant_kv[{tenant, info.device}] += blocks;
    }
  }
  for (const auto& [device, arena] : arenas) {
    auto& d = kv[device];
    d.device = device;
    d.total_bytes = uint64_t{arena.pages_total} * arena.page_bytes;
    // Unused arena pages count as free blocks of the device's first model.
    if (auto it = block_bytes.find(device); it != block_bytes.end() && it->second > 0) {
      d.free += uint64_t{arena.pages_free} * (arena.page_bytes / it->second);
    }
  }
  for (auto& [device, d] : kv) snap.kv.push_back(d);
  for (const auto& [key, blocks] : tenant_kv)
    snap.tenant_kv.push_back({key.first, key.second, blocks});
  snap.node = totals;
  if (cost_ledger_) {
    for (const auto& [device, t] : cost_ledger_->Totals()) {
      telemetry::RuntimeSnapshot::DeviceCost c;
      c.device = device;
      c.idle_usd = static_cast<double>(t.idle_nano) / 1e9;
      for (const auto& [component, nano] : t.by_component_nano) {
        c.by_component_usd[component] = static_cast<double>(nano) / 1e9;
      }
      snap.costs.push_back(std::move(c));
    }
  }
  return snap;
}

nlohmann::json Node::CapacityJson() const {
  const telemetry::RuntimeSnapshot snap = Snapshot();
  nlohmann::json devices = nlohmann::json::array();
  uint64_t total = 0, used = 0, cached = 0;
  for (const auto& d : snap.kv) {
    const uint64_t taken = d.used_bytes + d.cached_bytes;
    const uint64_t free = d.total_bytes > taken ? d.total_bytes - taken : 0;
    devices.push_back({{"id", d.device},
                       {"kv_bytes_total", d.total_bytes},
                       {"kv_bytes_used", d.used_bytes},
                       {"kv_bytes_cached", d.cached_bytes},
                       {"kv_bytes_free", free}});
    total += d.total_bytes;
    used += d.used_bytes;
    cached += d.cached_bytes;
  }
  nlohmann::json models = nlohmann::json::array();
  for (const auto& m : snap.model_states) {
    nlohmann::json model = {{"id", m.model}, {"device", m.device}, {"state", m.state}};
    for (const auto& live : snap.models) {
      if (live.model != m.model) continue;
      model["running"] = live.running;
      model["waiting"] = live.waiting;
      model["kv_bytes_used"] = live.kv_used_bytes;
      model["kv_bytes_capacity"] = live.kv_capacity_bytes;
    }
    models.push_back(std::move(model));
  }
  const auto totals = snap.node.value_or(telemetry::RuntimeSnapshot::NodeTotals{});
  return {{"draining", state_->draining()},
          {"ready", state_->ready()},
          {"preparing", openai_api_ ? openai_api_->preparing() : 0},
          {"queue_depth", totals.waiting},
          {"running", totals.running},
          {"kv_bytes_total", total},
          {"kv_bytes_used", used},
          {"kv_bytes_cached", cached},
          {"kv_bytes_free", total > used + cached ? total - used - cached : 0},
          {"devices", std::move(devices)},
          {"models", std::move(models)}};
}

bool Node::LoopResponsive(std::chrono::milliseconds max_age) {
  if (!http_server_) return false;
  int64_t now = SteadyNowNs();
  int64_t posted = heartbeat_posted_ns_.load();
  int64_t ran = heartbeat_ran_ns_.load();
  // Unresponsive when a heartbeat posted more than max_age ago has not run.
  bool responsive = ran >= posted || now - posted < max_age.count() * 1000000;
  if (ran >= posted) {
    heartbeat_posted_ns_.store(now);
    http_server_->Post([this, now] { heartbeat_ran_ns_.store(now); });
  }
  return responsive;
}

}  // namespace tokenmill::daemon
