#include "daemon/api_errors.h"

#include "gtest/gtest.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/daemon/fake_response.h"

namespace tokenmill::daemon {
namespace {

using testing::FakeResponse;

TEST(ApiErrorsTest, RetryAfterHeaderThroughSendError) {
  FakeResponse response;
  SendError(response, tenants::RetryLaterError("over the limit", std::chrono::seconds(4)));
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.Header("Retry-After"), "4");
  EXPECT_EQ(response.Json()["error"]["type"], "resource_exhausted");
  EXPECT_EQ(response.Json()["error"]["message"], "over the limit");

  FakeResponse plain;
  SendError(plain, absl::NotFoundError("nope"));
  EXPECT_EQ(plain.status, 404);
  EXPECT_EQ(plain.Header("Retry-After"), "");
}

TEST(ApiErrorsTest, OpenAiShape) {
  FakeResponse response;
  absl::Status status = WithErrorCode(
      tenants::RetryLaterError("slow down", std::chrono::seconds(2)), "rate_limit_exceeded");
  SendOpenAiError(response, status, {{"X-Request-Id", "abc"}});
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.Header("Retry-After"), "2");
  EXPECT_EQ(response.Header("X-Request-Id"), "abc");
  nlohmann::json error = response.Json()["error"];
  EXPECT_EQ(error["message"], "slow down");
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_EQ(error["code"], "rate_limit_exceeded");
  EXPECT_TRUE(error["param"].is_null());

  nlohmann::json bad =
      OpenAiErrorJson(WithErrorParam(absl::InvalidArgumentError("bad n"), "n"))["error"];
  EXPECT_EQ(bad["type"], "invalid_request_error");
  EXPECT_EQ(bad["param"], "n");
  EXPECT_TRUE(bad["code"].is_null());
  EXPECT_EQ(OpenAiErrorType(absl::StatusCode::kUnavailable), "server_error");
  EXPECT_EQ(OpenAiErrorType(absl::StatusCode::kUnauthenticated), "invalid_request_error");
  EXPECT_EQ(ErrorParam(absl::InternalError("x")), "");
}

TEST(ApiErrorsTest, DumpJsonReplacesInvalidUtf8) {
  nlohmann::json value = std::string(
      "a\xff"
      "b");
  EXPECT_EQ(DumpJson(value),
            "\"a\xEF\xBF\xBD"
            "b\"");
}

TEST(ApiErrorsTest, MethodNotAllowed) {
  FakeResponse response;
  SendMethodNotAllowedError(response, {"GET", "PUT"});
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(response.Header("Allow"), "GET, PUT");
}

}  // namespace
}  // namespace tokenmill::daemon
