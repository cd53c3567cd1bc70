#include "daemon/cli/control_client.h"

#include <curl/curl.h>

#include <cctype>
#include <memory>
#include <string_view>

namespace tokenmill::cli {
namespace {

size_t Append(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// "Name: value\r\n" lines into a map with lowercased names.
size_t AppendHeader(char* data, size_t size, size_t count, void* out) {
  const size_t n = size * count;
  std::string_view line(data, n);
  const size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.remove_suffix(1);
    (*static_cast<std::map<std::string, std::string>*>(out))[name] = std::string(value);
  }
  return n;
}

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

}  // namespace

// What the write callback of a streaming request needs.
struct ControlClient::StreamState {
  CURL* curl = nullptr;
  const ChunkCallback* on_chunk = nullptr;
  std::string* error_body = nullptr;
  bool stopped = false;

  static size_t Write(char* data, size_t size, size_t count, void* user) {
    auto* state = static_cast<StreamState*>(user);
    const size_t n = size * count;
    long status = 0;
    curl_easy_getinfo(state->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
      state->error_body->append(data, n);
      return n;
    }
    if (!(*state->on_chunk)(std::string_view(data, n))) {
      state->stopped = true;
      return 0;  // makes libcurl end the transfer with CURLE_WRITE_ERROR
    }
    return n;
  }
};

ControlClient::ControlClient(std::string socket_path, long timeout_ms)
    : socket_path_(std::move(socket_path)), timeout_ms_(timeout_ms) {}

ControlClient ControlClient::ForControlPort(std::string base_url, std::string admin_token,
                                            long timeout_ms) {
  ControlClient client("", timeout_ms);
  while (!base_url.empty() && base_url.back() == '/') base_url.pop_back();
  client.base_url_ = std::move(base_url);
  client.admin_token_ = std::move(admin_token);
  return client;
}

ControlResponse ControlClient::Request(const std::string& method, const std::string& path,
                                       const std::string& body) {
  return Perform(method, path, body, nullptr);
}

ControlResponse ControlClient::Stream(const std::string& method, const std::string& path,
                                      const std::string& body, const ChunkCallback& on_chunk) {
  StreamState state;
  state.on_chunk = &on_chunk;
  return Perform(method, path, body, &state);
}

ControlResponse ControlClient::Perform(const std::string& method, const std::string& path,
                                       const std::string& body, StreamState* stream) {
  ControlResponse result;
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) {
    result.error = "cannot initialise libcurl";
    return result;
  }
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto add_header = [&headers](const std::string& line) {
    curl_slist* list = curl_slist_append(headers.get(), line.c_str());
    if (list) {
      (void)headers.release();
      headers.reset(list);
    }
  };
  std::string url;
  std::string token = bearer_token_;
  if (base_url_.empty()) {
    url = "http://localhost" + path;
    curl_easy_setopt(curl.get(), CURLOPT_UNIX_SOCKET_PATH, socket_path_.c_str());
  } else {
    if (path == "/v1" || path.starts_with("/v1/")) {
      result.error =
          "the control port does not serve the OpenAI API (/v1); use the socket (--socket) or "
          "the [api] tcp port";
      return result;
    }
    url = base_url_ + path;
    token = admin_token_;
  }
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, AppendHeader);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &result.headers);
  if (stream) {
    stream->curl = curl.get();
    stream->error_body = &result.body;
    curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS, timeout_ms_);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, StreamState::Write);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, stream);
    add_header("Accept: text/event-stream");
  } else {
    curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, timeout_ms_);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, Append);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &result.body);
  }
  if (!token.empty()) add_header("Authorization: Bearer " + token);
  if (!body.empty() || method == "POST" || method == "PUT") {
    add_header("Content-Type: application/json");
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  if (headers) curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());
  CURLcode code = curl_easy_perform(curl.get());
  if (stream && stream->stopped) {
    result.error = "stopped";
    return result;
  }
  if (code != CURLE_OK) {
    result.error = curl_easy_strerror(code);
    return result;
  }
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &result.status);
  return result;
}

}  // namespace tokenmill::cli
