#include "daemon/logging.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/sinks/systemd_sink.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {

bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

absl::Status SetupLogging(std::string_view level, LogTarget target) {
  spdlog::level::level_enum lvl = spdlog::level::from_str(std::string(level));
  // from_str maps anything unknown to "off"; refuse that rather than go silent.
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown log level '", std::string(level), "' (trace|debug|info|warn|error)"));
  }
  bool journald =
      target == LogTarget::kJournald || (target == LogTarget::kAuto && StderrIsJournal());
  std::shared_ptr<spdlog::logger> logger;
  if (journald) {
    // journald adds its own timestamp and maps our level to PRIORITY.
    logger = std::make_shared<spdlog::logger>(
        "tokenmilld", std::make_shared<spdlog::sinks::systemd_sink_mt>("tokenmilld"));
    logger->set_pattern("%v");
  } else {
    logger = std::make_shared<spdlog::logger>("tokenmilld",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z level=%l %v");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  return absl::OkStatus();
}

}  // namespace tokenmill::daemon
