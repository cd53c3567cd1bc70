// Logging set-up for tokenmilld: journald when systemd started us, stderr
// otherwise. Lines are logfmt-style "event key=value ..." so both journald
// and a terminal reader can grep them.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace tokenmill::daemon {

enum class LogTarget {
  kAuto,  // journald when stderr is the journal stream ($JOURNAL_STREAM), else stderr
  kStderr,
  kJournald,
};

// Installs the default spdlog logger. level: trace|debug|info|warn|error.
absl::Status SetupLogging(std::string_view level, LogTarget target = LogTarget::kAuto);

// True when stderr is connected to the journal (systemd sets JOURNAL_STREAM
// to "DEV:INODE" of the stream it gave us).
bool StderrIsJournal();

}  // namespace tokenmill::daemon
