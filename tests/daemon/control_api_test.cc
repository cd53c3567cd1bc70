// The control API's readiness: /readyz through ControlApi::Handle, as the
// HTTP server calls it, with a counted source of the models still loading.
#include "daemon/control_api.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "daemon/node_state.h"
#include "gtest/gtest.h"
#include "tests/daemon/fake_response.h"

namespace tokenmill::daemon {
namespace {

using testing::FakeResponse;

std::shared_ptr<FakeResponse> Readyz(ControlApi& api) {
  http::HttpRequest request;
  request.method = "GET";
  request.path = "/readyz";
  auto response = std::make_shared<FakeResponse>();
  EXPECT_TRUE(api.Handle(request, response));
  return response;
}

TEST(ControlApiTest, ReadinessWaitsForTheModelsTheNodeStartsWith) {
  NodeState state(config::NodeConfig{}, std::chrono::system_clock::now());
  ControlApi api(state, {}, [] { return std::vector<devices::DeviceSample>{}; });
  std::atomic<size_t> loading{2};
  api.set_startup_loading_source([&loading] { return loading.load(); });

  EXPECT_EQ(Readyz(api)->status, 503) << "listeners not up yet";
  state.set_ready(true);
  std::shared_ptr<FakeResponse> r = Readyz(api);
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("loading 2 of the models it starts with"), std::string::npos) << r->body;
  loading = 0;  // loaded or failed: settled either way
  EXPECT_EQ(Readyz(api)->status, 200);
  // Once the first loads settled, nothing loading later (a reload, a model
  // from the API) makes the node unready again.
  loading = 1;
  EXPECT_EQ(Readyz(api)->status, 200);
  state.set_draining(true);
  EXPECT_EQ(Readyz(api)->status, 503);
}

}  // namespace
}  // namespace tokenmill::daemon
