#include "config/value_parsers.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"

namespace tokenmill::config {
namespace {

using u128 = unsigned __int128;

// A non-negative decimal "123" or "1.25", kept exact as digits / 10^scale so
// that "1.5GB" is exactly 1500000000 bytes with no floating-point rounding.
struct Decimal {
  uint64_t digits = 0;
  uint64_t pow10 = 1;  // 10^(number of fraction digits)
};

// Reads the longest decimal prefix of `text`; returns its length, 0 when the
// text does not start with a digit. Refuses more than 18 significant digits.
size_t ReadDecimal(std::string_view text, Decimal* out) {
  size_t i = 0;
  int count = 0;
  bool fraction = false;
  Decimal d;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.' && !fraction && i > 0) {
      fraction = true;
      continue;
    }
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) break;
    if (++count > 18) return 0;
    d.digits = d.digits * 10 + static_cast<uint64_t>(c - '0');
    if (fraction) d.pow10 *= 10;
  }
  if (i == 0 || text[i - 1] == '.') return 0;  // "" or "1." are not numbers
  *out = d;
  return i;
}

bool IsNameChar(char c, bool allow_colon) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
         (allow_colon && c == ':');
}

// "0".."999": a device ordinal such as the 0 of "cuda:0".
bool IsOrdinal(std::string_view text) {
  return !text.empty() && text.size() <= 3 && std::all_of(text.begin(), text.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
}

// A device kind as a plugin names it: [a-z][a-z0-9_-]{0,31}.
bool IsDeviceKind(std::string_view text) {
  if (text.empty() || text.size() > 32 ||
      !absl::ascii_islower(static_cast<unsigned char>(text[0]))) {
    return false;
  }
  return std::all_of(text.begin(), text.end(), [](char c) {
    return absl::ascii_islower(static_cast<unsigned char>(c)) ||
           absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

// "KIND:N" (or "KIND:*" when `star`) for any kind but "cpu" (the CPU is "cpu").
bool IsKindIndex(std::string_view text, bool star) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  const std::string_view kind = text.substr(0, colon), index = text.substr(colon + 1);
  if (!IsDeviceKind(kind) || kind == "cpu") return false;
  return IsOrdinal(index) || (star && index == "*");
}

}  // namespace

absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  const auto bad = absl::InvalidArgumentError(
      "must be a duration like \"30s\", \"500ms\" or \"2m\" (units ms, s, m, h)");
  Decimal d;
  const size_t n = ReadDecimal(text, &d);
  if (n == 0) return bad;
  const std::string_view unit = text.substr(n);
  uint64_t unit_ms = 0;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = 60 * 1000;
  } else if (unit == "h") {
    unit_ms = 3600 * 1000;
  } else {
    return bad;
  }
  const u128 scaled = static_cast<u128>(d.digits) * unit_ms;
  if (scaled % d.pow10 != 0) {
    return absl::InvalidArgumentError("must be a whole number of milliseconds");
  }
  const u128 ms = scaled / d.pow10;
  // A year is far past any sensible timeout; the bound keeps arithmetic on
  // the result (deadlines, sums) clear of overflow.
  constexpr u128 kMaxMs = u128{366} * 24 * 3600 * 1000;
  if (ms > kMaxMs) return absl::InvalidArgumentError("must be at most a year (8784h)");
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text) {
  const auto bad = absl::InvalidArgumentError(
      "must be a size like \"8GiB\", \"512MiB\", \"1.5GB\" or a byte count (units B, kB, MB, "
      "GB, TB, KiB, MiB, GiB, TiB)");
  Decimal d;
  const size_t n = ReadDecimal(text, &d);
  if (n == 0) return bad;
  std::string_view unit = text.substr(n);
  if (unit.starts_with(" ")) unit.remove_prefix(1);  // "8 GiB" reads naturally too
  struct Unit {
    std::string_view name;
    uint64_t bytes;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"B", 1},
      {"kB", 1000},
      {"KB", 1000},
      {"MB", 1000 * 1000},
      {"GB", 1000ull * 1000 * 1000},
      {"TB", 1000ull * 1000 * 1000 * 1000},
      {"KiB", 1ull << 10},
      {"MiB", 1ull << 20},
      {"GiB", 1ull << 30},
      {"TiB", 1ull << 40},
  };
  const auto it = std::find_if(std::begin(kUnits), std::end(kUnits),
                               [&](const Unit& u) { return u.name == unit; });
  if (it == std::end(kUnits) || (unit.empty() && n != text.size())) return bad;
  const u128 bytes = static_cast<u128>(d.digits) * it->bytes / d.pow10;
  if (bytes > std::numeric_limits<uint64_t>::max()) {
    return absl::InvalidArgumentError("is too large (at most 2^64 - 1 bytes)");
  }
  return static_cast<uint64_t>(bytes);
}

absl::StatusOr<double> ParsePercent(std::string_view text) {
  Decimal d;
  const size_t n = ReadDecimal(text, &d);
  if (n == 0 || text.substr(n) != "%") {
    return absl::InvalidArgumentError("must be a percentage like \"80%\"");
  }
  const double percent = static_cast<double>(d.digits) / static_cast<double>(d.pow10);
  if (percent <= 0.0 || percent > 100.0) {
    return absl::InvalidArgumentError("must be a percentage above 0% and at most 100%");
  }
  return percent / 100.0;
}

absl::StatusOr<uint32_t> ParseSocketMode(std::string_view text) {
  const bool well_formed =
      (text.size() == 3 || (text.size() == 4 && text[0] == '0')) &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; });
  if (!well_formed) return absl::InvalidArgumentError("must be an octal string like \"0660\"");
  uint32_t mode = 0;
  for (char c : text) mode = mode * 8 + static_cast<uint32_t>(c - '0');
  if (mode < 0600 || mode > 0777) {
    return absl::InvalidArgumentError(
        "must be between \"0600\" and \"0777\" (the daemon's user needs read and write)");
  }
  return mode;
}

absl::Status CheckListenAddress(std::string_view text) {
  const auto bad_form = absl::InvalidArgumentError(
      "must be \"host:port\" with an IPv4 address, \"localhost\" or a bracketed IPv6 address "
      "(\"[::1]:8080\") as host");
  std::string_view host;
  std::string_view port;
  bool v6 = false;
  if (text.starts_with("[")) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || text.substr(close + 1, 1) != ":") return bad_form;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    v6 = true;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad_form;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  const std::string host_z(host);  // inet_pton needs a NUL-terminated string
  unsigned char addr[16];
  const bool host_ok = v6 ? inet_pton(AF_INET6, host_z.c_str(), addr) == 1
                          : (host == "localhost" || inet_pton(AF_INET, host_z.c_str(), addr) == 1);
  if (!host_ok) return bad_form;
  uint32_t port_number = 0;
  const bool port_digits =
      !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c));
      });
  if (port_digits) {
    std::from_chars(port.data(), port.data() + port.size(), port_number);
  }
  if (!port_digits || port_number > 65535) {
    return absl::InvalidArgumentError("must end in a port from 0 to 65535 (\"host:port\")");
  }
  return absl::OkStatus();
}

absl::Status CheckDevicePattern(std::string_view text) {
  if (text == "cpu" || IsKindIndex(text, /*star=*/true)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "must be \"cpu\", \"KIND:N\" or \"KIND:*\" (\"cuda:0\", \"cuda:*\", a plugin's "
      "\"acme:1\")");
}

absl::Status CheckDeviceChoice(std::string_view text) {
  if (text == "auto" || text == "cpu" || IsKindIndex(text, /*star=*/false)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      "must be \"auto\", \"cpu\" or \"KIND:N\" (\"cuda:0\", a plugin's \"acme:1\")");
}

absl::Status CheckName(std::string_view text, bool allow_colon) {
  if (text.empty()) return absl::InvalidArgumentError("must not be empty");
  if (text.size() > 64) return absl::InvalidArgumentError("must be at most 64 characters long");
  if (!std::all_of(text.begin(), text.end(), [&](char c) { return IsNameChar(c, allow_colon); })) {
    return absl::InvalidArgumentError(
        allow_colon ? "may only contain letters, digits and '.', '_', ':', '-'"
                    : "may only contain letters, digits and '.', '_', '-'");
  }
  return absl::OkStatus();
}

absl::Status CheckTenantName(std::string_view text) {
  if (absl::Status s = CheckName(text, /*allow_colon=*/false); !s.ok()) return s;
  if (text.front() == '.' || text.front() == '-') {
    return absl::InvalidArgumentError("must not start with '.' or '-'");
  }
  return absl::OkStatus();
}

absl::Status CheckSha256Hex(std::string_view text) {
  const bool hex = std::all_of(text.begin(), text.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
  });
  if (text.size() != 64 || !hex) {
    return absl::InvalidArgumentError(
        "must be 64 lowercase hex characters, the SHA-256 of the API key "
        "(printf %s KEY | sha256sum)");
  }
  return absl::OkStatus();
}

absl::Status CheckAbsolutePath(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("must not be empty");
  if (text.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("must not contain NUL bytes");
  }
  if (text[0] != '/') return absl::InvalidArgumentError("must be an absolute path");
  return absl::OkStatus();
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

}  // namespace tokenmill::config
