// Small blocking clients for the HTTP server tests: a raw socket client that
// sends exact bytes and parses responses by hand, and a libcurl wrapper.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tokenmill::testing {

// One parsed response.
struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class RawClient {
 public:
  // nullptr when the connection fails.
  static std::unique_ptr<RawClient> ConnectUnix(const std::string& path);
  static std::unique_ptr<RawClient> ConnectTcp(uint16_t port);
  ~RawClient();

  // Sends everything (blocking); false when the peer is gone.
  bool Send(std::string_view bytes);
  // Reads until the peer closes or timeout; returns all bytes received.
  // *closed (when given) tells which of the two ended it.
  std::string ReadUntilClose(std::chrono::milliseconds timeout, bool* closed = nullptr);
  // Reads one response; body by Content-Length, chunked encoding, or until
  // close. `head`: the request was HEAD, no body follows. nullopt on timeout
  // or when the connection closed before a full response.
  std::optional<RawResponse> ReadResponse(std::chrono::milliseconds timeout, bool head = false);
  // True when the peer closes (EOF or reset) within timeout; other bytes are
  // discarded.
  bool WaitClosed(std::chrono::milliseconds timeout);
  // Reads whatever arrives until `needle` was seen; false on timeout/close.
  bool ReadUntil(std::string_view needle, std::chrono::milliseconds timeout);
  // Half-closes: the peer sees end of input, we can still read.
  void ShutdownWrite();
  void Close();

 private:
  explicit RawClient(int fd) : fd_(fd) {}
  // Appends to buffer_; 0 on EOF, <0 on error or timeout (-2).
  int ReadSome(std::chrono::steady_clock::time_point deadline);

  int fd_;
  std::string buffer_;
};

struct CurlResult {
  int code = -1;  // CURLcode
  long status = 0;
  std::string body;
  std::string headers;  // raw header block(s), as received
};

// One request with libcurl. unix_socket: path, or "" for TCP. `url` is the
// full URL ("http://localhost/echo").
CurlResult CurlRequest(const std::string& url, const std::string& unix_socket,
                       const std::string& method = "GET", const std::string& body = "",
                       const std::vector<std::string>& headers = {},
                       long timeout_ms = 10000);

}  // namespace tokenmill::testing
