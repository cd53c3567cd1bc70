#include "daemon/cli/control_json.h"

#include <cstdio>

namespace tokenmill::cli {

std::string ErrorMessage(const nlohmann::json& body) {
  if (!body.is_object()) return "";
  auto it = body.find("error");
  if (it == body.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto message = it->find("message");
    if (message != it->end() && message->is_string()) return message->get<std::string>();
  }
  return "";
}

JsonAnswer CallJson(ControlClient& client, const std::string& method, const std::string& path,
                    const std::string& body) {
  JsonAnswer answer;
  ControlResponse response = client.Request(method, path, body);
  answer.status = response.status;
  if (response.status == 0) {
    answer.error = "cannot reach tokenmilld at " + client.endpoint() + ": " + response.error +
                   "\n  (is the daemon running? set --socket or TOKENMILL_SOCKET, or --url and "
                   "--token for a control port)";
    return answer;
  }
  answer.body = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  const std::string what = method + " " + path;
  if (response.status >= 400) {
    std::string message = answer.body.is_discarded() ? response.body : ErrorMessage(answer.body);
    answer.error = what + ": HTTP " + std::to_string(response.status) + ": " + message;
  } else if (answer.body.is_discarded()) {
    answer.error = what + ": answer is not JSON (HTTP " + std::to_string(response.status) + ")";
  }
  return answer;
}

void PrintError(const char* command, const std::string& message) {
  std::fprintf(stderr, "tokenmill: %s: %s\n", command, message.c_str());
}

std::optional<nlohmann::json> FetchJson(ControlClient& client, const std::string& method,
                                        const std::string& path, const std::string& body) {
  JsonAnswer answer = CallJson(client, method, path, body);
  if (!answer.ok()) {
    std::fprintf(stderr, "tokenmill: %s\n", answer.error.c_str());
    return std::nullopt;
  }
  return std::move(answer.body);
}

}  // namespace tokenmill::cli
