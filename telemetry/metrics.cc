// The /metrics endpoint (prometheus-cpp's civetweb exposer) and build info.
#include "telemetry/metrics.h"

#include <arpa/inet.h>

#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "tokenmill/version.h"

namespace tokenmill::telemetry {
namespace {

// Turns "host:port" into civetweb's listening_ports syntax. Validating here
// keeps civetweb's own option syntax (",", "s" and "r" suffixes) out of reach
// of the config file, and gives the operator a precise error.
absl::StatusOr<std::string> ToCivetListeningPort(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen, "\" is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  const std::string port_text = listen.substr(colon + 1);
  uint32_t port = 0;
  if (port_text.empty() || port_text.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen, "\": port must be a number in 0..65535"));
  }
  if (host == "localhost") host = "127.0.0.1";
  unsigned char addr[16];
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), addr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics listen address \"", listen, "\": bad IPv6 address"));
    }
  } else if (inet_pton(AF_INET, host.c_str(), addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen,
                     "\": host must be an IPv4 address, [IPv6 address] or localhost"));
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  absl::StatusOr<std::string> civet_port = ToCivetListeningPort(listen);
  if (!civet_port.ok()) return civet_port.status();

  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // civetweb throws (CivetException, a std::runtime_error) when it cannot
    // bind; no exception may leave this module.
    exposer = std::make_unique<prometheus::Exposer>(*civet_port);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve /metrics on ", listen, ": ", e.what()));
  } catch (...) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", listen));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0 || ports.front() > 65535) {
    return absl::InternalError(
        absl::StrCat("serving /metrics on ", listen, " but its port is unknown"));
  }
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), static_cast<uint16_t>(ports.front())));
}

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, uint16_t port)
    : exposer_(std::move(exposer)), port_(port) {}

MetricsServer::~MetricsServer() = default;

void MetricsServer::Register(std::weak_ptr<prometheus::Collectable> collectable) {
  // The exposer's default uri is "/metrics", the path Prometheus scrapes.
  exposer_->RegisterCollectable(collectable, "/metrics");
}

void AddBuildInfo(prometheus::Registry& registry) {
  prometheus::BuildGauge()
      .Name("tokenmill_build_info")
      .Help("tokenmill build: version and git revision; the value is always 1")
      .Register(registry)
      .Add({{"version", kVersion}, {"revision", kRevision}})
      .Set(1);
}

}  // namespace tokenmill::telemetry
