// Reading the small text files of /proc and /sys.
//
// Such files report a size of 0, so they are read to the end rather than by
// their stat size. Every reader takes a full path that the caller has already
// put under DiscoveryOptions::root, so tests point them at fixture trees.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace tokenmill::devices {

// The whole file. kNotFound when it does not exist, kPermissionDenied when it
// cannot be opened (RAPL counters are often root-only), kUnavailable when a
// read fails part way.
absl::StatusOr<std::string> ReadTextFile(const std::filesystem::path& path);

// The first line of the file without surrounding whitespace ("package-0").
absl::StatusOr<std::string> ReadFirstLine(const std::filesystem::path& path);

// A file holding one unsigned decimal number (energy_uj, thermal temp).
// kInvalidArgument when the content is not a number.
absl::StatusOr<uint64_t> ReadUint64File(const std::filesystem::path& path);

// A file holding one signed decimal number (temperatures can be negative).
absl::StatusOr<int64_t> ReadInt64File(const std::filesystem::path& path);

}  // namespace tokenmill::devices
