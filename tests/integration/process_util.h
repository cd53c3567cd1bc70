// Test support for running real processes: temp dirs, child processes with
// captured output, a systemd notify socket, free loopback ports, HTTP GETs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace tokenmill::testing {

void WriteFile(const std::filesystem::path& path, const std::string& text);
std::string ReadFile(const std::filesystem::path& path);

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs argv (argv[0] is a path or found on PATH) with optional stdin text; kills
// it after timeout.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::string& stdin_text = "",
                         const std::map<std::string, std::string>& env = {});

// A child process that outlives the call; stdout and stderr go to files.
class Subprocess {
 public:
  Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env,
             std::filesystem::path stdout_file, std::filesystem::path stderr_file,
             bool set_watchdog_pid = false);
  ~Subprocess();  // SIGKILLs and reaps a child still running
  pid_t pid() const { return pid_; }
  bool Signal(int sig);
  // The exit status (or 128 + signal), or nullopt while it still runs after timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// A datagram socket in the systemd notify protocol's shape.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path);
  ~NotifySocket();
  const std::string& path() const { return path_; }
  // Waits for a datagram containing the line `line` (e.g. "READY=1"), keeping
  // every message received in messages().
  bool WaitFor(const std::string& line, std::chrono::milliseconds timeout);
  const std::vector<std::string>& messages() const { return messages_; }
  int Count(const std::string& line) const;

 private:
  int fd_ = -1;
  std::string path_;
  std::vector<std::string> messages_;
  size_t next_ = 0;  // first message not yet searched
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeLoopbackPort();

// Polls fn every 50 ms until it returns true or timeout passes.
bool WaitUntil(const std::function<bool()>& fn, std::chrono::milliseconds timeout);

}  // namespace tokenmill::testing
