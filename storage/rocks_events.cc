#include "storage/rocks_events.h"

#include <cstdio>
#include <string>

namespace tokenmill::storage {

void RocksLogger::Logv(const char* format, va_list ap) {
  Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
}

void RocksLogger::Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) {
  if (!sink_ || level < GetInfoLogLevel()) return;
  char small[512];
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(small, sizeof(small), format, copy);
  va_end(copy);
  if (n < 0) return;
  std::string line = "rocksdb: ";
  if (static_cast<size_t>(n) < sizeof(small)) {
    line.append(small, static_cast<size_t>(n));
  } else {
    std::string big(static_cast<size_t>(n) + 1, '\0');
    std::vsnprintf(big.data(), big.size(), format, ap);
    big.resize(static_cast<size_t>(n));
    line += big;
  }
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  StoreLogLevel out = StoreLogLevel::kDebug;
  if (level == rocksdb::InfoLogLevel::WARN_LEVEL) out = StoreLogLevel::kWarn;
  if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL && level != rocksdb::InfoLogLevel::HEADER_LEVEL) {
    out = StoreLogLevel::kError;
  }
  sink_(out, line);
}

void StoreEventListener::OnBackgroundError(rocksdb::BackgroundErrorReason /*reason*/,
                                           rocksdb::Status* bg_error) {
  if (bg_error == nullptr || bg_error->ok()) return;
  if (bg_error->severity() < rocksdb::Status::Severity::kHardError) return;
  if (on_error) on_error(*bg_error);
}

void StoreEventListener::OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/,
                                              rocksdb::Status /*bg_error*/, bool* auto_recovery) {
  if (auto_recovery != nullptr) *auto_recovery = false;
}

void StoreEventListener::OnMemTableSealed(const rocksdb::MemTableInfo& /*info*/) {
  if (on_wal_switch) on_wal_switch();
}

}  // namespace tokenmill::storage
