// KV arenas: the host arena's page accounting, addresses, content lifetime
// and misuse; the growing arena over a simulated device's memory: chunks as
// pages are taken, the cap (a share of what the weights leave, or bytes),
// chunks given back, stable addresses.
#include "devices/kv_arena.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fakes/fake_device_memory.h"

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
  // Pages have addresses once backed (the arena backs them as they are taken).
  EXPECT_EQ(arena->PageAddress(0), nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(arena->TakePage().has_value());
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

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// Takes pages until the arena refuses; the pages taken.
std::vector<uint32_t> TakeAll(KvArena& arena) {
  std::vector<uint32_t> pages;
  while (std::optional<uint32_t> p = arena.TakePage()) pages.push_back(*p);
  return pages;
}

KvArenaPtr MakeChunked(fakes::FakeDeviceMemory& memory, KvArenaBudget budget, size_t page_bytes,
                       size_t chunk_bytes) {
  absl::StatusOr<KvArenaPtr> arena =
      CreateChunkedKvArena(memory.ChunkSource(), budget, page_bytes, chunk_bytes);
  EXPECT_TRUE(arena.ok()) << arena.status();
  return arena.ok() ? std::move(*arena) : nullptr;
}

// The default on an 80 GiB device: the arena holds nothing until pages are
// taken, so 16 GiB of weights load after it is made, and it then grows to
// 80% of the 64 GiB the weights left.
TEST(ChunkedKvArenaTest, DefaultShareLeavesRoomForWeightsThenGrowsToEightyPercentOfTheRest) {
  fakes::FakeDeviceMemory gpu(80 * kGiB, /*real_memory=*/false);
  KvArenaPtr arena = MakeChunked(gpu, KvArenaBudget{}, kDefaultKvPageBytes, kDefaultKvChunkBytes);
  ASSERT_NE(arena, nullptr);
  EXPECT_EQ(gpu.used_bytes(), 0u);
  EXPECT_EQ(arena->Stats().pages_total, 80 * kGiB * 8 / 10 / kDefaultKvPageBytes);

  void* weights = gpu.Allocate(16 * kGiB);
  ASSERT_NE(weights, nullptr) << "16 GiB of weights must fit next to the default arena";

  const std::vector<uint32_t> pages = TakeAll(*arena);
  const uint64_t want_pages = 64 * kGiB * 8 / 10 / kDefaultKvPageBytes;  // 26214
  EXPECT_EQ(pages.size(), want_pages);
  const KvArenaStats s = arena->Stats();
  EXPECT_EQ(s.pages_backed, want_pages);
  EXPECT_EQ(s.pages_total, want_pages);
  EXPECT_EQ(s.pages_free, 0u);
  EXPECT_EQ(s.page_misses, 1u);
  EXPECT_EQ(gpu.used_bytes(), 16 * kGiB + want_pages * kDefaultKvPageBytes);
  // 64 MiB chunks, the last one short.
  EXPECT_EQ(gpu.allocations(), 1 + (want_pages + 31) / 32);
  for (uint32_t p : pages) arena->ReturnPage(p);
  arena.reset();
  EXPECT_EQ(gpu.used_bytes(), 16 * kGiB);
  EXPECT_EQ(gpu.bad_releases(), 0u);
}

TEST(ChunkedKvArenaTest, ByteBudgetCapsTheArenaInWholePages) {
  fakes::FakeDeviceMemory gpu(kGiB, /*real_memory=*/false);
  KvArenaBudget budget;
  budget.bytes = 10 * kMiB + 100;
  KvArenaPtr arena = MakeChunked(gpu, budget, kMiB, 4 * kMiB);
  ASSERT_NE(arena, nullptr);
  EXPECT_EQ(arena->Stats().pages_total, 10u);
  EXPECT_EQ(TakeAll(*arena).size(), 10u);
  EXPECT_EQ(gpu.used_bytes(), 10 * kMiB);
  EXPECT_EQ(gpu.allocations(), 3u);  // 4 + 4 + 2 pages
  const KvArenaStats s = arena->Stats();
  EXPECT_EQ(s.pages_total, 10u);
  EXPECT_EQ(s.pages_free, 0u);
  EXPECT_EQ(s.pages_backed, 10u);
}

TEST(ChunkedKvArenaTest, ShareCapHoldsWhenTheDeviceFillsUp) {
  fakes::FakeDeviceMemory gpu(100 * kMiB, /*real_memory=*/false);
  KvArenaBudget budget;
  budget.fraction = 0.5;
  KvArenaPtr arena = MakeChunked(gpu, budget, kMiB, 8 * kMiB);
  ASSERT_NE(arena, nullptr);
  std::vector<uint32_t> pages = TakeAll(*arena);
  EXPECT_EQ(pages.size(), 50u);
  // Someone else takes 40 MiB of the 50 left: the cap becomes half of
  // (10 free + 50 held) = 30 MiB, under what the arena holds, so it keeps
  // its chunks but grows no more; pages_total never reads below the pages
  // taken.
  void* other = gpu.Allocate(40 * kMiB);
  ASSERT_NE(other, nullptr);
  for (uint32_t p : pages) arena->ReturnPage(p);
  EXPECT_EQ(TakeAll(*arena).size(), 50u);  // the backed pages, no more
  EXPECT_EQ(gpu.used_bytes(), 90 * kMiB);
  EXPECT_EQ(arena->Stats().pages_total, 50u);
  EXPECT_EQ(arena->Stats().pages_free, 0u);
}

TEST(ChunkedKvArenaTest, AChunkTheDeviceRefusesIsAMissNotAnError) {
  fakes::FakeDeviceMemory gpu(16 * kMiB, /*real_memory=*/false);
  KvArenaBudget budget;
  budget.bytes = 64 * kMiB;  // more than the device has
  KvArenaPtr arena = MakeChunked(gpu, budget, kMiB, 4 * kMiB);
  ASSERT_NE(arena, nullptr);
  void* other = gpu.Allocate(6 * kMiB);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(TakeAll(*arena).size(), 8u);  // two chunks of 4; the third is refused
  EXPECT_EQ(arena->Stats().page_misses, 1u);
  gpu.Release(other);
  EXPECT_TRUE(arena->TakePage().has_value());  // grows again once there is room
}

TEST(ChunkedKvArenaTest, TrimGivesBackOnlyChunksWithNoPageTaken) {
  fakes::FakeDeviceMemory gpu(64 * kMiB, /*real_memory=*/true);
  KvArenaBudget budget;
  budget.bytes = 32 * kMiB;
  KvArenaPtr arena = MakeChunked(gpu, budget, kMiB, 4 * kMiB);
  ASSERT_NE(arena, nullptr);
  std::vector<uint32_t> pages;
  for (int i = 0; i < 12; ++i) pages.push_back(*arena->TakePage());  // chunks 0, 1, 2
  EXPECT_EQ(gpu.used_bytes(), 12 * kMiB);
  // Chunk 1 (pages 4-7) all free, chunk 0 with page 1 still taken, chunk 2
  // with pages 8-10 free and 11 taken.
  for (uint32_t p : {0u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 10u}) arena->ReturnPage(p);
  void* kept = arena->PageAddress(1);
  void* kept_too = arena->PageAddress(11);
  std::memset(kept, 0x5a, kMiB);
  KvArenaStats s = arena->Stats();
  EXPECT_EQ(s.pages_backed, 12u);
  EXPECT_EQ(s.pages_reclaimable, 4u);
  EXPECT_EQ(s.pages_free, 30u);

  EXPECT_EQ(arena->TrimFreeChunks(), 4 * kMiB);
  EXPECT_EQ(gpu.used_bytes(), 8 * kMiB);
  EXPECT_EQ(arena->PageAddress(4), nullptr);
  EXPECT_EQ(arena->PageAddress(1), kept);
  EXPECT_EQ(arena->PageAddress(11), kept_too);
  const auto* bytes = static_cast<const uint8_t*>(kept);
  EXPECT_TRUE(std::all_of(bytes, bytes + kMiB, [](uint8_t b) { return b == 0x5a; }));
  s = arena->Stats();
  EXPECT_EQ(s.pages_backed, 8u);
  EXPECT_EQ(s.pages_reclaimable, 0u);
  EXPECT_EQ(s.pages_free, 30u);  // the cap did not move: trimmed pages can regrow

  // Free backed pages go first (0, 2, 3, 8, 9, 10), then a chunk regrows in
  // the lowest empty slot.
  for (uint32_t want : {0u, 2u, 3u, 8u, 9u, 10u, 4u}) {
    EXPECT_EQ(arena->TakePage(), std::optional<uint32_t>(want));
  }
  EXPECT_EQ(gpu.used_bytes(), 12 * kMiB);
  EXPECT_EQ(arena->TrimFreeChunks(), 0u);
  EXPECT_EQ(gpu.bad_releases(), 0u);
}

// A taken page stays where it is while the arena grows and trims around it,
// with its bytes.
TEST(ChunkedKvArenaTest, ATakenPageKeepsItsAddressAndBytesThroughGrowthAndTrims) {
  constexpr size_t kPage = 64 << 10;
  fakes::FakeDeviceMemory gpu(64 * kPage, /*real_memory=*/true);
  KvArenaBudget budget;
  budget.fraction = 1.0;
  KvArenaPtr arena = MakeChunked(gpu, budget, kPage, 2 * kPage);
  ASSERT_NE(arena, nullptr);
  const uint32_t held = *arena->TakePage();
  void* address = arena->PageAddress(held);
  ASSERT_NE(address, nullptr);
  std::memset(address, 0x33, kPage);
  for (int round = 0; round < 3; ++round) {
    std::vector<uint32_t> pages = TakeAll(*arena);
    EXPECT_EQ(pages.size(), 63u);
    for (uint32_t p : pages) {
      EXPECT_NE(p, held);
      std::memset(arena->PageAddress(p), 0x77, kPage);
    }
    for (uint32_t p : pages) arena->ReturnPage(p);
    arena->TrimFreeChunks();
    EXPECT_EQ(arena->PageAddress(held), address);
    EXPECT_EQ(gpu.used_bytes(), 2 * kPage);  // the held page's chunk only
  }
  const auto* bytes = static_cast<const uint8_t*>(address);
  EXPECT_TRUE(std::all_of(bytes, bytes + kPage, [](uint8_t b) { return b == 0x33; }));
}

TEST(ChunkedKvArenaTest, RefusesBadBudgetsAndSources) {
  fakes::FakeDeviceMemory gpu(kGiB, /*real_memory=*/false);
  KvArenaBudget tiny;
  tiny.bytes = kMiB - 1;
  EXPECT_EQ(CreateChunkedKvArena(gpu.ChunkSource(), tiny, kMiB).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (double fraction : {0.0, -0.5, 1.5}) {
    KvArenaBudget share;
    share.fraction = fraction;
    EXPECT_EQ(CreateChunkedKvArena(gpu.ChunkSource(), share, kMiB).status().code(),
              absl::StatusCode::kInvalidArgument)
        << fraction;
  }
  KvChunkSource no_free = gpu.ChunkSource();
  no_free.free_bytes = nullptr;
  EXPECT_EQ(CreateChunkedKvArena(no_free, KvArenaBudget{}, kMiB).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateChunkedKvArena(gpu.ChunkSource(), KvArenaBudget{}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The host arena with a share: a reservation it grows over, capped by the
// host's memory, never more than it reserved.
TEST(KvArenaTest, HostArenaWithAShareGrowsAndTrims) {
  KvArenaBudget share;
  share.fraction = 0.01;
  absl::StatusOr<KvArenaPtr> arena = CreateHostKvArena(share, 2 * OsPage(), 8 * OsPage());
  ASSERT_TRUE(arena.ok()) << arena.status();
  const KvArenaStats before = (*arena)->Stats();
  EXPECT_GT(before.pages_total, 0u);
  EXPECT_EQ(before.pages_backed, 0u);
  std::vector<uint32_t> pages;
  for (int i = 0; i < 6; ++i) pages.push_back(*(*arena)->TakePage());
  for (uint32_t p : pages) std::memset((*arena)->PageAddress(p), 1, 2 * OsPage());
  EXPECT_EQ((*arena)->Stats().pages_backed, 8u);  // two chunks of 4
  for (uint32_t p : pages) (*arena)->ReturnPage(p);
  // Returned host pages hold no memory (dropped): nothing to reclaim for a
  // load, though the chunks still go back to the reservation.
  EXPECT_EQ((*arena)->Stats().pages_reclaimable, 0u);
  EXPECT_EQ((*arena)->TrimFreeChunks(), 16 * OsPage());
  EXPECT_EQ((*arena)->Stats().pages_backed, 0u);
}

}  // namespace
}  // namespace tokenmill::devices
