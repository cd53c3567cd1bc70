#include "daemon/supervisor.h"

#include <pthread.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {
namespace {

sigset_t LifecycleSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

void Notify(const std::string& state) {
  // sd_notify is a no-op (returns 0) when NOTIFY_SOCKET is unset.
  if (sd_notify(0, state.c_str()) < 0) {
    spdlog::warn("sd_notify_failed state=\"{}\"", state);
  }
}

}  // namespace

void BlockLifecycleSignals() {
  sigset_t set = LifecycleSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // Peers that hang up mid-write must not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);
}

int Supervise(Node& node, const std::string& config_path) {
  uint64_t watchdog_usec = 0;
  bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
  // Ping at half the interval, as sd_watchdog_enabled(3) advises.
  auto tick = watchdog ? std::chrono::microseconds(watchdog_usec / 2) : std::chrono::seconds(1);
  auto watchdog_max_age = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::microseconds(watchdog_usec));

  Notify(absl::StrCat("READY=1\nSTATUS=serving\nMAINPID=", getpid()));
  spdlog::info("ready watchdog_usec={}", watchdog ? watchdog_usec : 0);

  sigset_t set = LifecycleSignals();
  while (true) {
    timespec timeout{};
    timeout.tv_sec = std::chrono::duration_cast<std::chrono::seconds>(tick).count();
    timeout.tv_nsec =
        (std::chrono::duration_cast<std::chrono::nanoseconds>(tick) % std::chrono::seconds(1))
            .count();
    siginfo_t info{};
    int sig = sigtimedwait(&set, &info, &timeout);
    if (sig < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        spdlog::error("sigtimedwait_failed error=\"{}\"", std::strerror(errno));
      }
      if (watchdog) {
        if (node.LoopResponsive(watchdog_max_age)) {
          Notify("WATCHDOG=1");
        } else {
          spdlog::error("watchdog_withheld reason=\"api loop unresponsive\"");
        }
      }
      continue;
    }
    if (sig == SIGHUP) {
      Notify("RELOADING=1\nSTATUS=reloading configuration");
      auto next = config::LoadConfigFile(config_path);
      if (!next.ok()) {
        // A bad edit must not take a serving node down: keep the old config.
        spdlog::error("config_reload_failed source={} error=\"{}\"", config_path,
                      std::string(next.status().message()));
      } else {
        node.Reload(std::move(*next));
      }
      Notify("READY=1\nSTATUS=serving");
      continue;
    }
    spdlog::info("stopping signal={}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    Notify("STOPPING=1\nSTATUS=draining");
    node.Stop(node.state().config()->node.drain_timeout);
    spdlog::info("stopped");
    return 0;
  }
}

}  // namespace tokenmill::daemon
