// One place that maps absl::Status codes to HTTP statuses and error bodies.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "daemon/http/http_server.h"

namespace tokenmill::daemon {

// The HTTP status that tells a client what to do about a status code.
int HttpStatusFor(absl::StatusCode code);

// "invalid_argument", "not_found", ... (the error "type" field).
std::string ErrorType(absl::StatusCode code);

// {"error":{"type":TYPE,"message":MESSAGE}}
std::string ErrorBody(std::string_view type, std::string_view message);

// Sends status as a JSON error with the mapped HTTP status.
void SendError(http::ResponseWriter& response, const absl::Status& status);

// Sends a JSON body with status 200 (or the given status).
void SendJson(http::ResponseWriter& response, const std::string& json, int status = 200);

}  // namespace tokenmill::daemon
