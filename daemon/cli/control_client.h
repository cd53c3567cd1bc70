// ControlClient: a blocking HTTP client for tokenmilld's unix socket (libcurl).
#pragma once

#include <string>

namespace tokenmill::cli {

struct ControlResponse {
  long status = 0;  // HTTP status; 0 when the request did not get an answer
  std::string body;
  std::string error;  // transport error when status == 0
};

class ControlClient {
 public:
  ControlClient(std::string socket_path, long timeout_ms);
  ControlResponse Request(const std::string& method, const std::string& path,
                          const std::string& body = "");
  const std::string& socket_path() const { return socket_path_; }

 private:
  std::string socket_path_;
  long timeout_ms_;
};

}  // namespace tokenmill::cli
