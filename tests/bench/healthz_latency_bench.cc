// /healthz latency while one tenant sends multi-MiB prompts: the real
// tokenmilld (the built one, or --tokenmilld PATH, e.g. main's build for a
// before figure) serving a synthesized model. `--senders` threads of tenant
// "bulk" post --prompt-mib MiB prompts in a loop (the tiny model's context
// refuses them with 400 after encoding: the encoding is the load); meanwhile
// one keep-alive connection on the unix socket times --probes GET /healthz,
// one every --probe-gap-ms, and tenant "small" times short completions.
// Prints p50/p99/max of each and how many bulk prompts were encoded.
//
//   healthz_latency_bench [--tokenmilld PATH] [--probes 400] [--senders 2]
//                         [--prompt-mib 4] [--probe-gap-ms 5]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/bench/bench_stats.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/tiny_model.h"

namespace {

using namespace tokenmill;
namespace tt = tokenmill::testing;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kBulkKey[] = "key-bulk-0123456789";
constexpr char kSmallKey[] = "key-small-0123456789";

struct Args {
  std::string tokenmilld;
  int probes = 400;
  int senders = 2;
  int prompt_mib = 4;
  int probe_gap_ms = 5;
};

bool ParseArgs(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return false;
    std::string value = argv[++i];
    if (flag == "--tokenmilld") {
      args->tokenmilld = value;
    } else if (flag == "--probes") {
      args->probes = std::atoi(value.c_str());
    } else if (flag == "--senders") {
      args->senders = std::atoi(value.c_str());
    } else if (flag == "--prompt-mib") {
      args->prompt_mib = std::atoi(value.c_str());
    } else if (flag == "--probe-gap-ms") {
      args->probe_gap_ms = std::atoi(value.c_str());
    } else {
      return false;
    }
  }
  return args->probes > 0 && args->senders >= 0 && args->prompt_mib > 0;
}

// Text of about `bytes` bytes: words of a few letters, spaces and newlines,
// varied enough that BPE merges run as on real prose.
std::string PromptText(size_t bytes) {
  static const char* kWords[] = {"the",   "token",  "mill", "prices", "every", "step",
                                 "of",    "a",      "node", "yield",  "per",   "dollar",
                                 "cache", "blocks", "fair", "share",  "queue", "tenant"};
  std::string text;
  text.reserve(bytes + 16);
  uint64_t x = 88172645463325252ULL;
  while (text.size() < bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    text += kWords[x % (sizeof(kWords) / sizeof(kWords[0]))];
    text += (x >> 32) % 13 == 0 ? '\n' : ' ';
  }
  text.resize(bytes);
  return text;
}

void Print(const char* what, std::vector<double>& samples_us) {
  bench::SampleFigures f = bench::Summarize(samples_us);
  std::printf("%-28s n=%-5zu p50=%9.3f ms  p99=%9.3f ms  max=%9.3f ms\n", what, samples_us.size(),
              f.p50_us / 1000.0, f.p99_us / 1000.0, f.max_us / 1000.0);
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!ParseArgs(argc, argv, &args)) {
    std::fprintf(stderr,
                 "usage: healthz_latency_bench [--tokenmilld PATH] [--probes N] [--senders N] "
                 "[--prompt-mib N] [--probe-gap-ms N]\n");
    return 2;
  }
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "healthz_bench.XXXXXX").string();
  if (mkdtemp(dir_template.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::filesystem::path dir = dir_template;
  struct RemoveDir {
    std::filesystem::path path;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } remove_dir{dir};
  const std::filesystem::path model_path = dir / "tiny.gguf";
  if (auto status = model::WriteSynthGguf(tt::TinyModelShape(), model_path); !status.ok()) {
    std::fprintf(stderr, "cannot write the model: %s\n", status.ToString().c_str());
    return 1;
  }
  tt::DaemonOptions options;
  options.binary = args.tokenmilld;
  options.api_toml = absl::StrCat("max_body_bytes = \"", args.prompt_mib + 4, "MiB\"\n");
  options.extra_toml = absl::StrCat("[[model]]\nid = \"tiny\"\npath = \"", model_path.string(),
                                    "\"\n\n", "[[tenant]]\nname = \"bulk\"\napi_keys_sha256 = [\"",
                                    tenants::ApiKeySha256(kBulkKey),
                                    "\"]\n\n[[tenant]]\nname = \"small\"\napi_keys_sha256 = [\"",
                                    tenants::ApiKeySha256(kSmallKey), "\"]\n");
  tt::DaemonProcess node(dir, options);
  if (!node.Start() || !node.WaitModelReady("tiny")) {
    std::fprintf(stderr, "the daemon did not start:\n%s\n", node.Stderr().c_str());
    return 1;
  }
  const std::string socket = node.socket_path().string();
  const std::string bulk_body = json{
      {"model", "tiny"},
      {"prompt", PromptText(static_cast<size_t>(args.prompt_mib) << 20)},
      {"max_tokens", 1}}.dump();
  const std::string small_body =
      json{{"model", "tiny"}, {"prompt", "a short prompt"}, {"max_tokens", 1}}.dump();
  auto post = [&](const std::string& body, const char* key) {
    return tt::CurlRequest(
        "http://localhost/v1/completions", socket, "POST", body,
        {"Content-Type: application/json", absl::StrCat("Authorization: Bearer ", key)}, 600000);
  };

  // Idle figures first, then under load.
  // One keep-alive connection; a probe whose connection the daemon drops
  // (its idle timer fires when a blocked loop wakes) is sent again on a new
  // one and timed from its first send, as a client would see it.
  int dropped = 0;
  auto probe_healthz = [&](int n, std::vector<double>* samples) -> bool {
    std::unique_ptr<tt::RawClient> client;
    for (int i = 0; i < n; ++i) {
      const auto start = Clock::now();
      bool answered = false;
      for (int attempt = 0; attempt < 5 && !answered; ++attempt) {
        if (client == nullptr) client = tt::RawClient::ConnectUnix(socket);
        if (client == nullptr) return false;
        if (client->Send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) {
          auto response = client->ReadResponse(std::chrono::seconds(30));
          answered = response && response->status == 200;
        }
        if (!answered) {
          client.reset();
          ++dropped;
        }
      }
      if (!answered) return false;
      samples->push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      std::this_thread::sleep_for(std::chrono::milliseconds(args.probe_gap_ms));
    }
    return true;
  };
  std::vector<double> idle_us;
  if (!probe_healthz(std::min(args.probes, 100), &idle_us)) {
    std::fprintf(stderr, "healthz probe failed while idle\n");
    return 1;
  }

  std::atomic<bool> stop{false};
  std::atomic<int> bulk_sent{0};
  std::mutex statuses_mu;
  std::map<long, int> bulk_statuses;
  std::vector<double> bulk_ms;
  std::vector<std::thread> senders;
  for (int i = 0; i < args.senders; ++i) {
    senders.emplace_back([&] {
      while (!stop.load()) {
        const auto start = Clock::now();
        tt::CurlResult r = post(bulk_body, kBulkKey);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        bulk_sent.fetch_add(1);
        std::lock_guard<std::mutex> lock(statuses_mu);
        ++bulk_statuses[r.status];
        bulk_ms.push_back(ms * 1000.0);
      }
    });
  }
  // Probe only once the first bulk prompts are in the daemon's hands.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto load_start = Clock::now();
  std::vector<double> small_us;
  std::thread small([&] {
    while (!stop.load()) {
      const auto start = Clock::now();
      tt::CurlResult r = post(small_body, kSmallKey);
      if (r.status == 200) {
        small_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::vector<double> loaded_us;
  const bool probed = probe_healthz(args.probes, &loaded_us);
  const double load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
  stop.store(true);
  for (auto& t : senders) t.join();
  small.join();
  std::optional<int> exit_code = node.Stop();
  if (!probed) {
    std::fprintf(stderr, "healthz probe failed under load\n");
    return 1;
  }

  std::printf("tokenmilld: %s\n",
              args.tokenmilld.empty() ? tt::TokenmilldPath().c_str() : args.tokenmilld.c_str());
  std::printf("load: %d sender(s) of tenant bulk, %d MiB prompts; %.1f s under load\n",
              args.senders, args.prompt_mib, load_s);
  Print("/healthz idle", idle_us);
  Print("/healthz under load", loaded_us);
  Print("small completion (other tenant)", small_us);
  Print("bulk request round trip", bulk_ms);
  std::printf("bulk requests answered: %d (", bulk_sent.load());
  for (const auto& [status, count] : bulk_statuses) std::printf(" %ld:%d", status, count);
  std::printf(" ); /healthz connections dropped by the daemon: %d; daemon exit %d\n", dropped,
              exit_code.value_or(-1));
  return 0;
}
