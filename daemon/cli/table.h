// Plain-text tables and number formats for the CLI's human output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tokenmill::cli {

// Left-aligned columns separated by two spaces; the first row is the header.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows);

std::string FormatBytes(uint64_t bytes);                                             // "1.5 GiB"
std::string FormatDuration(double seconds);                                          // "2h 3m 4s"
std::string FormatOptional(const std::optional<double>& value, const char* format);  // "-" if none

}  // namespace tokenmill::cli
