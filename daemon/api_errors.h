// One place that maps absl::Status codes to HTTP statuses and error bodies,
// in two shapes: the control API's {"error":{"type","message"}} and OpenAI's
// {"error":{"message","type","param","code"}} for the /v1 data API.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "daemon/http/http_server.h"
#include "nlohmann/json.hpp"

namespace tokenmill::daemon {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// The HTTP status that tells a client what to do about a status code.
int HttpStatusFor(absl::StatusCode code);

// "invalid_argument", "not_found", ... (the error "type" field).
std::string ErrorType(absl::StatusCode code);

// kInvalidArgument "field 'FIELD' WHY" (a JSON body's field) and
// "parameter 'PARAM' WHY" (a query parameter).
absl::Status BadField(std::string_view field, std::string_view why);
absl::Status BadParam(std::string_view param, std::string_view why);

// {"error":{"type":TYPE,"message":MESSAGE}}
std::string ErrorBody(std::string_view type, std::string_view message);

// Sends status as a JSON error with the mapped HTTP status. A status made by
// tenants::RetryLaterError also gets a Retry-After header.
void SendError(http::ResponseWriter& response, const absl::Status& status);

// Sends a JSON body with status 200 (or the given status).
void SendJson(http::ResponseWriter& response, const std::string& json, int status = 200);

// The JSON text of `value`; invalid UTF-8 (a token's partial bytes) is
// replaced by U+FFFD instead of throwing.
std::string DumpJson(const nlohmann::json& value);

// Attaches OpenAI's "param" (the request field at fault) or "code"
// ("model_not_found", "invalid_api_key") to a status; read back by
// OpenAiErrorJson. Returns the status for chaining.
absl::Status WithErrorParam(absl::Status status, std::string_view param);
absl::Status WithErrorCode(absl::Status status, std::string_view code);
std::string ErrorParam(const absl::Status& status);  // "" when none
std::string ErrorCode(const absl::Status& status);   // "" when none

// OpenAI's error "type" for a status: "invalid_request_error" (4xx),
// "rate_limit_error" (429), "server_error" (5xx).
std::string OpenAiErrorType(absl::StatusCode code);

// {"error":{"message","type","param","code"}}: param and code are null
// unless attached to the status.
nlohmann::json OpenAiErrorJson(const absl::Status& status);

// Sends status in OpenAI's shape with the mapped HTTP status, plus a
// Retry-After header when the status carries one, plus `headers`.
void SendOpenAiError(http::ResponseWriter& response, const absl::Status& status,
                     HttpHeaders headers = {});

// The Retry-After header for a status made by tenants::RetryLaterError.
void AddRetryAfterHeader(const absl::Status& status, HttpHeaders& headers);

// 405 in the control API's shape with an Allow header listing `allowed`.
void SendMethodNotAllowedError(http::ResponseWriter& response,
                               const std::vector<std::string>& allowed);

}  // namespace tokenmill::daemon
