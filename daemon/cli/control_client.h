// ControlClient: a blocking HTTP client for tokenmilld's unix socket, or for
// its control TCP port ([api] control_tcp) with the admin token (libcurl).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace tokenmill::cli {

struct ControlResponse {
  long status = 0;  // HTTP status; 0 when the request did not get an answer
  std::string body;
  std::string error;  // transport error when status == 0
  // The answer's headers, names lowercased (the last one of a name wins).
  std::map<std::string, std::string> headers;
  std::string Header(const std::string& lowercase_name) const {
    auto it = headers.find(lowercase_name);
    return it == headers.end() ? "" : it->second;
  }
};

// One request at a time; not thread-safe.
class ControlClient {
 public:
  // Over the unix socket at socket_path.
  ControlClient(std::string socket_path, long timeout_ms);
  // Over TCP to a control port: base_url is "http://HOST:PORT"; every request
  // carries "Authorization: Bearer admin_token". The control port does not
  // serve the OpenAI API, so /v1 requests fail at once (status 0).
  static ControlClient ForControlPort(std::string base_url, std::string admin_token,
                                      long timeout_ms);

  // The whole answer, within timeout_ms.
  ControlResponse Request(const std::string& method, const std::string& path,
                          const std::string& body = "");

  // Called with each piece of a 2xx answer's body as it arrives; returning
  // false stops the transfer.
  using ChunkCallback = std::function<bool(std::string_view chunk)>;
  // Like Request, for answers that stream (SSE): a 2xx body goes to on_chunk
  // piece by piece and is not kept; any other status's body is collected in
  // the response, so errors read as with Request. timeout_ms bounds the
  // connection only, since a generation runs as long as it needs. A transfer
  // that on_chunk stopped has status 0 and error "stopped".
  ControlResponse Stream(const std::string& method, const std::string& path,
                         const std::string& body, const ChunkCallback& on_chunk);

  // Sent as "Authorization: Bearer TOKEN" with every request when not empty
  // (the OpenAI API's key; the control API on the socket ignores it).
  void set_bearer_token(std::string token) { bearer_token_ = std::move(token); }

  // Where requests go, for messages: the socket path or the base URL.
  const std::string& endpoint() const { return base_url_.empty() ? socket_path_ : base_url_; }

 private:
  struct StreamState;
  ControlResponse Perform(const std::string& method, const std::string& path,
                          const std::string& body, StreamState* stream);

  std::string socket_path_;
  long timeout_ms_;
  std::string bearer_token_;
  std::string base_url_;     // set for a control port
  std::string admin_token_;  // sent to a control port
};

}  // namespace tokenmill::cli
