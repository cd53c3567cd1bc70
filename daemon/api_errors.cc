#include "daemon/api_errors.h"

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"

namespace tokenmill::daemon {

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

std::string ErrorBody(std::string_view type, std::string_view message) {
  nlohmann::json body = {{"error", {{"type", type}, {"message", message}}}};
  return body.dump();
}

void SendError(http::ResponseWriter& response, const absl::Status& status) {
  response.Send(HttpStatusFor(status.code()), "application/json",
                ErrorBody(ErrorType(status.code()), std::string(status.message())));
}

void SendJson(http::ResponseWriter& response, const std::string& json, int status) {
  response.Send(status, "application/json", json);
}

}  // namespace tokenmill::daemon
