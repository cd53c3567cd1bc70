#include "daemon/api_errors.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/tenants/tenant_registry.h"

namespace tokenmill::daemon {
namespace {

constexpr char kParamPayload[] = "type.googleapis.com/tokenmill.ErrorParam";
constexpr char kCodePayload[] = "type.googleapis.com/tokenmill.ErrorCode";

std::string PayloadText(const absl::Status& status, const char* url) {
  auto payload = status.GetPayload(url);
  return payload ? std::string(*payload) : std::string();
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorType(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

absl::Status BadField(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("field '", std::string(field), "' ", std::string(why)));
}

absl::Status BadParam(std::string_view param, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("parameter '", std::string(param), "' ", std::string(why)));
}

std::string ErrorBody(std::string_view type, std::string_view message) {
  nlohmann::json body = {{"error", {{"type", type}, {"message", message}}}};
  return DumpJson(body);
}

void AddRetryAfterHeader(const absl::Status& status, HttpHeaders& headers) {
  if (std::optional<std::chrono::seconds> after = tenants::RetryAfter(status)) {
    headers.emplace_back("Retry-After", absl::StrCat(after->count()));
  }
}

void SendError(http::ResponseWriter& response, const absl::Status& status) {
  HttpHeaders headers;
  AddRetryAfterHeader(status, headers);
  response.Send(HttpStatusFor(status.code()), "application/json",
                ErrorBody(ErrorType(status.code()), std::string(status.message())),
                std::move(headers));
}

void SendJson(http::ResponseWriter& response, const std::string& json, int status) {
  response.Send(status, "application/json", json);
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::Status WithErrorParam(absl::Status status, std::string_view param) {
  status.SetPayload(kParamPayload, absl::Cord(std::string(param)));
  return status;
}

absl::Status WithErrorCode(absl::Status status, std::string_view code) {
  status.SetPayload(kCodePayload, absl::Cord(std::string(code)));
  return status;
}

std::string ErrorParam(const absl::Status& status) { return PayloadText(status, kParamPayload); }

std::string ErrorCode(const absl::Status& status) { return PayloadText(status, kCodePayload); }

std::string OpenAiErrorType(absl::StatusCode code) {
  int http = HttpStatusFor(code);
  if (http == 429) return "rate_limit_error";
  if (http >= 500) return "server_error";
  return "invalid_request_error";
}

nlohmann::json OpenAiErrorJson(const absl::Status& status) {
  std::string param = ErrorParam(status);
  std::string code = ErrorCode(status);
  return {{"error",
           {{"message", std::string(status.message())},
            {"type", OpenAiErrorType(status.code())},
            {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
            {"code", code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code)}}}};
}

void SendOpenAiError(http::ResponseWriter& response, const absl::Status& status,
                     HttpHeaders headers) {
  AddRetryAfterHeader(status, headers);
  response.Send(HttpStatusFor(status.code()), "application/json", DumpJson(OpenAiErrorJson(status)),
                std::move(headers));
}

void SendMethodNotAllowedError(http::ResponseWriter& response,
                               const std::vector<std::string>& allowed) {
  std::string allow = absl::StrJoin(allowed, ", ");
  response.Send(405, "application/json",
                ErrorBody("method_not_allowed", absl::StrCat("allowed methods: ", allow)),
                {{"Allow", allow}});
}

}  // namespace tokenmill::daemon
