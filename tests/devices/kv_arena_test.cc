// The host KV arena: page accounting, addresses, content lifetime, misuse.
#include "devices/kv_arena.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tokenmill::devices {
namespace {

size_t OsPage() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

KvArenaPtr MakeArena(size_t bytes, size_t page_bytes) {
  absl::StatusOr<KvArenaPtr> arena = CreateHostKvArena(bytes, page_bytes);
  EXPECT_TRUE(arena.ok()) << arena.status();
  return arena.ok() ? std::move(*arena) : nullptr;
}

TEST(KvArenaTest, RoundsDownToWholePages) {
  const size_t page = 2 * OsPage();
  KvArenaPtr arena = MakeArena(10 * page + 100, page);
  ASSERT_NE(arena, nullptr);
  const KvArenaStats s = arena->Stats();
  EXPECT_EQ(s.page_bytes, page);
  EXPECT_EQ(arena->page_bytes(), page);
  EXPECT_EQ(s.pages_total, 10u);
  EXPECT_EQ(s.pages_free, 10u);
  EXPECT_EQ(s.page_misses, 0u);
  EXPECT_EQ(s.bad_returns, 0u);
}

TEST(KvArenaTest, RefusesBadSizes) {
  EXPECT_EQ(CreateHostKvArena(OsPage() - 1, OsPage()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateHostKvArena(8 * OsPage(), OsPage() + 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateHostKvArena(8 * OsPage(), 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvArenaTest, TakesEveryPageLowestFirstThenCountsMisses) {
  KvArenaPtr arena = MakeArena(6 * OsPage(), OsPage());
  ASSERT_NE(arena, nullptr);
  for (uint32_t want = 0; want < 6; ++want) {
    std::optional<uint32_t> page = arena->TakePage();
    ASSERT_TRUE(page.has_value());
    EXPECT_EQ(*page, want);
  }
  EXPECT_FALSE(arena->TakePage().has_value());
  EXPECT_FALSE(arena->TakePage().has_value());
  KvArenaStats s = arena->Stats();
  EXPECT_EQ(s.pages_free, 0u);
  EXPECT_EQ(s.page_misses, 2u);

  // Returned pages come back, lowest first.
  arena->ReturnPage(4);
  arena->ReturnPage(1);
  EXPECT_EQ(arena->Stats().pages_free, 2u);
  EXPECT_EQ(arena->TakePage(), std::optional<uint32_t>(1));
  EXPECT_EQ(arena->TakePage(), std::optional<uint32_t>(4));
  EXPECT_FALSE(arena->TakePage().has_value());
  EXPECT_EQ(arena->Stats().page_misses, 3u);
}

TEST(KvArenaTest, DoubleAndUnknownReturnsAreIgnoredAndCounted) {
  KvArenaPtr arena = MakeArena(4 * OsPage(), OsPage());
  ASSERT_NE(arena, nullptr);
  const uint32_t page = *arena->TakePage();
  arena->ReturnPage(page);
  arena->ReturnPage(page);  // twice
  arena->ReturnPage(2);     // never taken
  arena->ReturnPage(4);     // past the end
  const KvArenaStats s = arena->Stats();
  EXPECT_EQ(s.bad_returns, 3u);
  EXPECT_EQ(s.pages_free, 4u);
  // The free list holds each page once: four takes, then a miss.
  std::set<uint32_t> taken;
  for (int i = 0; i < 4; ++i) taken.insert(*arena->TakePage());
  EXPECT_EQ(taken.size(), 4u);
  EXPECT_FALSE(arena->TakePage().has_value());
}

TEST(KvArenaTest, PagesAreDistinctAndPageBytesApart) {
  const size_t page = 4 * OsPage();
  KvArenaPtr arena = MakeArena(5 * page, page);
  ASSERT_NE(arena, nullptr);
  for (uint32_t p = 0; p + 1 < 5; ++p) {
    auto* a = static_cast<uint8_t*>(arena->PageAddress(p));
    auto* b = static_cast<uint8_t*>(arena->PageAddress(p + 1));
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(b - a, static_cast<ptrdiff_t>(page));
  }
  EXPECT_EQ(arena->PageAddress(5), nullptr);
}

TEST(KvArenaTest, WrittenBytesSurviveUntilTheirPageIsReturned) {
  const size_t page = 2 * OsPage();
  constexpr uint32_t kPages = 4;
  KvArenaPtr arena = MakeArena(kPages * page, page);
  ASSERT_NE(arena, nullptr);
  for (uint32_t i = 0; i < kPages; ++i) {
    const uint32_t p = *arena->TakePage();
    std::memset(arena->PageAddress(p), 0x10 + static_cast<int>(p), page);
  }
  auto filled_with = [&](uint32_t p, uint8_t value) {
    const auto* bytes = static_cast<const uint8_t*>(arena->PageAddress(p));
    return std::all_of(bytes, bytes + page, [&](uint8_t b) { return b == value; });
  };
  for (uint32_t p = 0; p < kPages; ++p) EXPECT_TRUE(filled_with(p, 0x10 + p)) << p;

  // A returned page's content is dropped; its neighbours keep theirs.
  arena->ReturnPage(2);
  EXPECT_TRUE(filled_with(1, 0x11));
  EXPECT_TRUE(filled_with(3, 0x13));
  EXPECT_EQ(arena->TakePage(), std::optional<uint32_t>(2));
  EXPECT_TRUE(filled_with(2, 0x00));
}

TEST(KvArenaTest, ConcurrentTakersNeverShareAPage) {
  constexpr uint32_t kPages = 16;
  KvArenaPtr arena = MakeArena(kPages * OsPage(), OsPage());
  ASSERT_NE(arena, nullptr);
  std::vector<std::atomic<int>> holders(kPages);
  std::atomic<int> conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        std::optional<uint32_t> p = arena->TakePage();
        if (!p) continue;
        if (holders[*p].fetch_add(1) != 0) conflicts.fetch_add(1);
        holders[*p].fetch_sub(1);
        arena->ReturnPage(*p);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(conflicts.load(), 0);
  const KvArenaStats s = arena->Stats();
  EXPECT_EQ(s.pages_free, kPages);
  EXPECT_EQ(s.bad_returns, 0u);
}

}  // namespace
}  // namespace tokenmill::devices
