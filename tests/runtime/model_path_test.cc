// ResolveModelPath: what a model load may open, checked with stat() only.
#include "runtime/node/model_path.h"

#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::runtime {
namespace {

namespace fs = std::filesystem;

class ModelPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() / "models";
    dir_.Write("models/m.gguf", "GGUF");
    dir_.Write("outside/secret.gguf", "GGUF");
    dir_.Write("models/st/config.json", "{}");
    fs::create_symlink(dir_.path() / "outside" / "secret.gguf", root_ / "out.gguf");
    fs::create_symlink(root_ / "m.gguf", root_ / "in.gguf");
    ASSERT_EQ(mkfifo((root_ / "pipe").c_str(), 0600), 0);
    policy_.roots = std::vector<fs::path>{root_};
  }

  // The error message with the path replaced, to compare answers.
  std::string Refusal(const fs::path& path) {
    absl::StatusOr<fs::path> r = ResolveModelPath(path, policy_);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << path << ": " << r.status();
    return absl::StrReplaceAll(r.status().message(), {{path.string(), "PATH"}});
  }

  tokenmill::testing::TempDir dir_;
  fs::path root_;
  ModelPathPolicy policy_;
};

TEST_F(ModelPathTest, InsideTheRootGivesTheCanonicalPath) {
  auto direct = ResolveModelPath(root_ / "m.gguf", policy_);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(*direct, fs::canonical(root_ / "m.gguf"));
  auto via_link = ResolveModelPath(root_ / "in.gguf", policy_);
  ASSERT_TRUE(via_link.ok()) << via_link.status();
  EXPECT_EQ(*via_link, *direct);
  auto dotted = ResolveModelPath(root_ / "st" / ".." / "m.gguf", policy_);
  ASSERT_TRUE(dotted.ok()) << dotted.status();
  EXPECT_EQ(*dotted, *direct);
  EXPECT_TRUE(ResolveModelPath(root_ / "st", policy_).ok());
}

TEST_F(ModelPathTest, NulRelativeAndEmptyAreRefused) {
  const std::string with_nul = (root_ / "m.gguf").string() + std::string(1, '\0') + "x";
  auto nul = ResolveModelPath(fs::path(with_nul), policy_);
  EXPECT_EQ(nul.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(nul.status().message(), "NUL")) << nul.status();
  auto relative = ResolveModelPath("models/m.gguf", policy_);
  EXPECT_EQ(relative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(relative.status().message(), "relative")) << relative.status();
  EXPECT_EQ(ResolveModelPath("", policy_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelPathTest, OutsideAndMissingGetOneAnswer) {
  const std::string outside = Refusal(dir_.path() / "outside" / "secret.gguf");
  EXPECT_EQ(Refusal(root_ / ".." / "outside" / "secret.gguf"), outside);
  EXPECT_EQ(Refusal(root_ / "out.gguf"), outside);
  EXPECT_EQ(Refusal(dir_.path() / "outside" / "none.gguf"), outside);
  EXPECT_EQ(Refusal(root_ / "none.gguf"), outside);
  EXPECT_EQ(Refusal("/etc/shadow"), outside);
  EXPECT_EQ(Refusal("/etc/no-such-file"), outside);
  // A root that is a prefix of a name is not its parent.
  dir_.Write("models2/m.gguf", "GGUF");
  EXPECT_EQ(Refusal(dir_.path() / "models2" / "m.gguf"), outside);
  // No roots at all: nothing passes.
  policy_.roots = std::vector<fs::path>{};
  EXPECT_EQ(ResolveModelPath(root_ / "m.gguf", policy_).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ModelPathTest, DevicesFifosAndSocketsAreRefusedByType) {
  auto fifo = ResolveModelPath(root_ / "pipe", policy_);
  EXPECT_EQ(fifo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(fifo.status().message(), "a FIFO")) << fifo.status();
  ModelPathPolicy trusted;  // a config model: no roots, the type still counts
  auto zero = ResolveModelPath("/dev/zero", trusted);
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(zero.status().message(), "character device")) << zero.status();
  // Inside a safetensors directory too, and a link out of the roots there.
  ASSERT_EQ(mkfifo((root_ / "st" / "model.safetensors").c_str(), 0600), 0);
  auto dir_fifo = ResolveModelPath(root_ / "st", policy_);
  EXPECT_EQ(dir_fifo.status().code(), absl::StatusCode::kInvalidArgument) << dir_fifo.status();
  fs::remove(root_ / "st" / "model.safetensors");
  fs::create_symlink("/etc/passwd", root_ / "st" / "tokenizer.json");
  auto dir_link = ResolveModelPath(root_ / "st", policy_);
  EXPECT_EQ(dir_link.status().code(), absl::StatusCode::kInvalidArgument) << dir_link.status();
  EXPECT_TRUE(ResolveModelPath(root_ / "st", trusted).ok());
}

TEST_F(ModelPathTest, ConfigPathsNeedNoRoot) {
  ModelPathPolicy trusted;
  auto outside = ResolveModelPath(dir_.path() / "outside" / "secret.gguf", trusted);
  ASSERT_TRUE(outside.ok()) << outside.status();
  auto missing = ResolveModelPath(dir_.path() / "none.gguf", trusted);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tokenmill::runtime
