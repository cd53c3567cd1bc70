#include "storage/store_integrity.h"

#include <algorithm>
#include <cstdio>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::storage {

std::filesystem::path WalPath(const std::filesystem::path& db_dir, uint64_t number) {
  char name[32];
  std::snprintf(name, sizeof(name), "%06llu.log", static_cast<unsigned long long>(number));
  return db_dir / name;
}

absl::StatusOr<std::vector<WalFile>> ScanWalFiles(const std::filesystem::path& db_dir) {
  std::vector<WalFile> out;
  std::error_code ec;
  if (!std::filesystem::exists(db_dir, ec)) return out;
  for (std::filesystem::directory_iterator it(db_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::filesystem::path& p = it->path();
    if (p.extension() != ".log") continue;
    uint64_t number = 0;
    if (!absl::SimpleAtoi(p.stem().string(), &number)) continue;
    auto scan = ScanWalFile(p);
    if (!scan.ok()) return scan.status();
    out.push_back({number, p, *scan});
  }
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot list ", db_dir.string(), ": ", ec.message()));
  }
  std::sort(out.begin(), out.end(),
            [](const WalFile& a, const WalFile& b) { return a.number < b.number; });
  return out;
}

std::optional<WalFinding> FindWalDamage(const std::vector<WalFile>& wals) {
  for (const WalFile& w : wals) {
    if (w.scan.end != WalScan::End::kDamaged) continue;
    WalFinding f;
    f.kind = "damaged";
    f.file = w.path;
    f.offset = static_cast<int64_t>(w.scan.problem_offset);
    f.message = absl::StrCat("write-ahead log ", w.path.string(), " is damaged at byte offset ",
                             w.scan.problem_offset, " of ", w.scan.file_size, " (", w.scan.problem,
                             "); the ", w.scan.records, " write batches before it are intact, the ",
                             w.scan.file_size - w.scan.problem_offset,
                             " bytes from there cannot be replayed");
    return f;
  }
  return std::nullopt;
}

uint64_t MaxWalSequence(const std::vector<WalFile>& wals) {
  uint64_t max = 0;
  for (const WalFile& w : wals) max = std::max(max, w.scan.last_sequence);
  return max;
}

WalFinding DescribeWalLoss(const std::filesystem::path& db_dir, const std::vector<WalFile>& wals,
                           const WalMarker& marker, uint64_t recovered) {
  WalFinding f;
  const std::string lost =
      absl::StrCat("the store had acknowledged writes up to sequence ", marker.sequence,
                   ", the database holds them up to ", recovered, ", so sequences ", recovered + 1,
                   " to ", marker.sequence, " are lost");
  const WalFile* mine = nullptr;
  for (const WalFile& w : wals) {
    if (w.number == marker.wal_number) mine = &w;
  }
  if (mine == nullptr) {
    f.kind = "missing";
    f.file = WalPath(db_dir, marker.wal_number);
    f.message = absl::StrCat("write-ahead log ", f.file.string(), " is missing: ", lost);
    return f;
  }
  if (mine->scan.records > 0 && mine->scan.first_sequence > recovered + 1) {
    // The marker's file is there but starts after a gap: a file before it is gone.
    f.kind = "missing";
    f.file = mine->path;
    f.offset = 0;
    f.message = absl::StrCat("the write-ahead log before ", mine->path.string(),
                             " is missing (that file starts at sequence ",
                             mine->scan.first_sequence, "): ", lost);
    return f;
  }
  f.kind = "truncated";
  f.file = mine->path;
  f.offset = static_cast<int64_t>(mine->scan.valid_end);
  std::string cut;
  if (mine->scan.end == WalScan::End::kIncomplete) {
    cut = absl::StrCat(", and a record cut off at its end starts at byte ",
                       mine->scan.problem_offset);
  }
  f.message = absl::StrCat("write-ahead log ", mine->path.string(), " was cut short: it is ",
                           mine->scan.file_size, " bytes, its complete records end at byte offset ",
                           mine->scan.valid_end, cut, "; ", lost);
  return f;
}

}  // namespace tokenmill::storage
