// Storage tests use the shared TempDir.
#pragma once

#include "tests/support/temp_dir.h"

namespace tokenmill::storage::testing {
using ::tokenmill::testing::TempDir;
}  // namespace tokenmill::storage::testing
