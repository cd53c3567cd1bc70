// Parsers for the string forms that tokenmill.toml uses for durations, sizes,
// percentages, file modes, listen addresses, device patterns and names.
//
// They know nothing of TOML: each takes text and returns the value, or a
// kInvalidArgument status whose message completes a sentence that starts with
// the field name, e.g. "must be a duration like \"30s\", \"500ms\" or \"2m\"".
// The TOML reader (config/table_reader.h) adds the field name, the position
// and the offending value. All functions are pure and thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tokenmill::config {

// "30s", "500ms", "2m", "1h", "1.5s". A bare number is refused so that the
// unit is never guessed; integers of milliseconds are handled by the caller
// because TOML keeps them as integers. Fractions must come out as whole
// milliseconds. Zero is allowed here; callers that need > 0 check it.
absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text);

// "8GiB", "512MiB", "1.5GB", "4096B", "4096". Units: B, kB/KB, MB, GB, TB
// (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024). Fractions are
// rounded down to whole bytes. Refuses values past 2^64 - 1.
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text);

// "80%" -> 0.8. The percentage must be in (0, 100].
absl::StatusOr<double> ParsePercent(std::string_view text);

// A unix file mode written in octal, "0660" or "660", between 0600 and 0777:
// the daemon's own user must be able to read and write its socket.
absl::StatusOr<uint32_t> ParseSocketMode(std::string_view text);

// "host:port" where host is an IPv4 address in dotted form, "localhost" or a
// bracketed IPv6 address ("[::1]:8080"); port 0..65535 (0 = any free port,
// meant for tests). The empty string is not an address; callers that allow
// "" for "off" check it first.
absl::Status CheckListenAddress(std::string_view text);

// A [[device]].match pattern: "cpu", "KIND:N" or "KIND:*", KIND being
// [a-z][a-z0-9_-]{0,31} ("cuda", or the kind a device plugin names).
absl::Status CheckDevicePattern(std::string_view text);

// A [[model]].device value: "auto", "cpu" or "KIND:N".
absl::Status CheckDeviceChoice(std::string_view text);

// 1-64 characters from [A-Za-z0-9._-] (node names) or, with allow_colon,
// [A-Za-z0-9._:-] (model ids, tenant names, cache groups: "llama3:8b").
absl::Status CheckName(std::string_view text, bool allow_colon);

// Exactly 64 lowercase hex characters: a SHA-256 digest of an API key.
// A tenant name (or cache group): 1-64 characters from [A-Za-z0-9._-], not
// starting with '.' or '-' (no ".", "..", hidden names or flag look-alikes).
absl::Status CheckTenantName(std::string_view text);

absl::Status CheckSha256Hex(std::string_view text);

// An absolute path without NUL bytes.
absl::Status CheckAbsolutePath(std::string_view text);

// Levenshtein distance, for "did you mean" hints on unknown keys.
size_t EditDistance(std::string_view a, std::string_view b);

}  // namespace tokenmill::config
