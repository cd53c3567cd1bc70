// Control requests whose answers are JSON, with the error text an operator
// reads when one fails (no daemon, an answer that is not JSON, an HTTP error
// with the daemon's message).
#pragma once

#include <optional>
#include <string>

#include "daemon/cli/control_client.h"
#include "nlohmann/json.hpp"

namespace tokenmill::cli {

struct JsonAnswer {
  long status = 0;      // HTTP status; 0 when the daemon did not answer
  nlohmann::json body;  // discarded when the answer is not JSON
  std::string error;    // "" for a 2xx JSON answer, else why it failed
  bool ok() const { return error.empty(); }
};

JsonAnswer CallJson(ControlClient& client, const std::string& method, const std::string& path,
                    const std::string& body = "");

// CallJson that prints the error to stderr ("tokenmill: ...") and returns
// nullopt on failure.
std::optional<nlohmann::json> FetchJson(ControlClient& client, const std::string& method,
                                        const std::string& path, const std::string& body = "");

// Prints "tokenmill: COMMAND: MESSAGE" to stderr.
void PrintError(const char* command, const std::string& message);

// error.message of an OpenAI-style or control API error body, "" if none.
std::string ErrorMessage(const nlohmann::json& body);

}  // namespace tokenmill::cli
