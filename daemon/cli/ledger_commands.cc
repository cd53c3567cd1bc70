#include "daemon/cli/ledger_commands.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "daemon/cli/control_json.h"
#include "daemon/cli/runtime_json.h"
#include "nlohmann/json.hpp"

namespace tokenmill::cli {
namespace {

// What the cursor file holds: the cursor, and stdout's length after the page
// it ends (when stdout is a regular file).
struct SavedCursor {
  std::string cursor;
  std::optional<uint64_t> stdout_bytes;
};

// "CURSOR [STDOUT_BYTES]\n"; a missing file is the start of the ledger.
std::optional<SavedCursor> ReadCursorFile(const std::string& path, std::string& error) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return SavedCursor{};
  std::ifstream in(path);
  if (!in) {
    error = "cannot read cursor file " + path;
    return std::nullopt;
  }
  SavedCursor saved;
  std::string bytes;
  in >> saved.cursor >> bytes;
  if (!bytes.empty()) {
    uint64_t n = 0;
    if (std::sscanf(bytes.c_str(), "%lu", &n) != 1) {
      error = "cursor file " + path + " is malformed";
      return std::nullopt;
    }
    saved.stdout_bytes = n;
  }
  if (saved.cursor.size() > 64 || !std::all_of(saved.cursor.begin(), saved.cursor.end(),
                                               [](char c) { return c > ' ' && c < 127; })) {
    error = "cursor file " + path + " is malformed";
    return std::nullopt;
  }
  return saved;
}

// Writes the file next to its place, syncs it, renames it over the old one
// and syncs the directory: a crash leaves the old cursor or the new one.
bool WriteCursorFile(const std::string& path, const SavedCursor& saved, std::string& error) {
  const std::string tmp = path + ".tmp";
  std::string text = saved.cursor;
  if (saved.stdout_bytes) text += " " + std::to_string(*saved.stdout_bytes);
  text += "\n";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  if (fd >= 0 && ::close(fd) != 0) ok = false;
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) ok = false;
  if (!ok) {
    error = "cannot write cursor file " + path + ": " + std::strerror(errno);
    return false;
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
  return true;
}

// stdout's length when it is a regular file.
std::optional<uint64_t> StdoutBytes() {
  struct stat st {};
  if (::fstat(STDOUT_FILENO, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

LedgerCommands::LedgerCommands(CLI::App& app) {
  CLI::App* ledger = app.add_subcommand("ledger", "the per-request ledger");
  export_cmd_ = ledger->add_subcommand(
      "export",
      "write ledger records to stdout in commit order, each exactly once across runs with "
      "--cursor-file");
  export_cmd_->footer(
      "Each run reads the cursor from --cursor-file (none: from the first record), writes the "
      "records committed after it page by page, and after each page is written and flushed "
      "rewrites the file atomically (temp file, fsync, rename). When stdout is a regular file "
      "the cursor file also holds its length, and a re-run first cuts off what a killed run "
      "wrote past it, so the file gets every record exactly once. To a pipe, a run killed "
      "between writing a page and saving its cursor repeats that page on the next run; "
      "dedupe by request id (jsonl request_id, csv request_id, CloudEvents id). CSV has its "
      "header line only when the export starts without a cursor.");
  export_cmd_->add_option("--tenant", tenant_, "only this tenant's records");
  export_cmd_->add_option("--model", model_, "only this model's records");
  export_cmd_->add_option("--from", from_,
                          "records at or after this time: RFC 3339, YYYY-MM-DD or unix seconds");
  export_cmd_->add_option("--to", to_, "records before this time (same forms)");
  export_cmd_->add_option("--format", format_, "jsonl, csv or cloudevents (CloudEvents 1.0 JSON)")
      ->check(CLI::IsMember({"jsonl", "csv", "cloudevents"}))
      ->capture_default_str();
  export_cmd_->add_option("--cursor-file", cursor_file_,
                          "read the cursor from PATH and save it after each page");
  export_cmd_
      ->add_option("--limit", limit_,
                   "stop after this many ledger positions (records without filters); "
                   "0: up to the newest record")
      ->capture_default_str();
  export_cmd_->add_option("--page-records", page_records_, "ledger positions per request")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100000}))
      ->capture_default_str();
}

int LedgerCommands::Run(ControlClient& client) {
  if (export_cmd_ == nullptr || !export_cmd_->parsed()) return -1;
  return Export(client);
}

int LedgerCommands::Export(ControlClient& client) {
  std::string error;
  SavedCursor saved;
  if (!cursor_file_.empty()) {
    std::optional<SavedCursor> read = ReadCursorFile(cursor_file_, error);
    if (!read) return PrintError("ledger export", error), 1;
    saved = *read;
  }
  const bool fresh = saved.cursor.empty();
  // Cut off what a killed run wrote to this file after its last saved page.
  const std::optional<uint64_t> out_bytes = StdoutBytes();
  if (saved.stdout_bytes && out_bytes) {
    if (*out_bytes > *saved.stdout_bytes) {
      if (::ftruncate(STDOUT_FILENO, static_cast<off_t>(*saved.stdout_bytes)) != 0) {
        return PrintError("ledger export",
                          std::string("cannot truncate stdout: ") + std::strerror(errno)),
               1;
      }
    } else if (*out_bytes < *saved.stdout_bytes) {
      PrintError("ledger export",
                 "stdout is shorter than when the cursor was saved; appending from the cursor");
    }
  }
  if (out_bytes) ::lseek(STDOUT_FILENO, 0, SEEK_END);

  uint64_t remaining = limit_;
  bool first_page = true;
  for (;;) {
    uint64_t page = page_records_;
    if (limit_ > 0) page = std::min(page, remaining);
    std::string path = "/control/v1/ledger?limit=" + std::to_string(page) + "&format=" + format_;
    if (!saved.cursor.empty()) path += "&cursor=" + PathSegment(saved.cursor);
    if (!tenant_.empty()) path += "&tenant=" + PathSegment(tenant_);
    if (!model_.empty()) path += "&model=" + PathSegment(model_);
    if (!from_.empty()) path += "&from=" + PathSegment(from_);
    if (!to_.empty()) path += "&to=" + PathSegment(to_);
    ControlResponse response = client.Request("GET", path);
    if (response.status == 0)
      return PrintError("ledger export", "cannot reach tokenmilld: " + response.error), 1;
    if (response.status != 200) {
      const nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
      std::string message = response.body;
      if (body.is_object() && body.contains("error") && body["error"].is_object()) {
        message = body["error"].value("message", response.body);
      }
      return PrintError("ledger export",
                        "HTTP " + std::to_string(response.status) + ": " + message),
             1;
    }
    const std::string next = response.Header("x-tokenmill-next-cursor");
    if (next.empty())
      return PrintError("ledger export", "the answer has no X-Tokenmill-Next-Cursor"), 1;
    std::string_view body = response.body;
    if (format_ == "csv" && !(fresh && first_page)) {
      const size_t eol = body.find('\n');
      body = eol == std::string_view::npos ? std::string_view() : body.substr(eol + 1);
    }
    if (!body.empty() && std::fwrite(body.data(), 1, body.size(), stdout) != body.size()) {
      return PrintError("ledger export",
                        std::string("cannot write stdout: ") + std::strerror(errno)),
             1;
    }
    if (std::fflush(stdout) != 0) {
      return PrintError("ledger export",
                        std::string("cannot write stdout: ") + std::strerror(errno)),
             1;
    }
    saved.cursor = next;
    saved.stdout_bytes = StdoutBytes();
    if (!cursor_file_.empty() && !WriteCursorFile(cursor_file_, saved, error)) {
      return PrintError("ledger export", error), 1;
    }
    first_page = false;
    if (limit_ > 0) remaining -= page;
    if (response.Header("x-tokenmill-complete") == "true" || (limit_ > 0 && remaining == 0)) break;
  }
  return 0;
}

}  // namespace tokenmill::cli
