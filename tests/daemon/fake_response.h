// FakeResponse: a ResponseWriter that records what an API sent, for tests
// that call Handle() directly without a server.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/http/http_server.h"
#include "nlohmann/json.hpp"

namespace tokenmill::daemon::testing {

class FakeResponse : public http::ResponseWriter {
 public:
  void Send(int status, std::string_view content_type, std::string body,
            std::vector<std::pair<std::string, std::string>> headers = {}) override {
    ++sends;
    this->status = status;
    this->content_type = std::string(content_type);
    this->body = std::move(body);
    this->headers = std::move(headers);
  }
  void Start(int status, std::string_view content_type,
             std::vector<std::pair<std::string, std::string>> headers = {}) override {
    this->status = status;
    this->content_type = std::string(content_type);
    this->headers = std::move(headers);
    started = true;
  }
  void Write(std::string chunk) override { body += chunk; }
  void End() override { ended = true; }
  bool closed() const override { return is_closed; }
  void OnClose(std::function<void()> fn) override { on_close = std::move(fn); }

  std::string Header(const std::string& name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return "";
  }
  nlohmann::json Json() const { return nlohmann::json::parse(body); }

  int sends = 0;
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool started = false;
  bool ended = false;
  bool is_closed = false;
  std::function<void()> on_close;
};

inline http::HttpRequest Request(std::string method, std::string path, std::string body = "") {
  http::HttpRequest request;
  request.method = std::move(method);
  request.path = std::move(path);
  request.body = std::move(body);
  return request;
}

}  // namespace tokenmill::daemon::testing
