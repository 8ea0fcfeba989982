#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "storage/pg.hpp"

namespace troupe::storage {

/// One schema version: applied once, in order, inside a transaction.
struct migration {
  int version;
  const char* name;
  const char* sql;
};

/// Every migration troupe knows, oldest first.
const std::vector<migration>& migrations();

/// Applies the migrations the database lacks, under an advisory lock so that
/// nodes starting together apply each exactly once. Returns the version now
/// in place through `version`.
[[nodiscard]] caf::error migrate(connection& conn, int& version);

/// Creates the daily telemetry partitions from `days_back` days ago through
/// `days_ahead` days ahead (UTC) and drops those older than `retention_days`.
/// Idempotent; run at start and then periodically.
[[nodiscard]] caf::error maintain_partitions(connection& conn,
                                             int64_t days_back,
                                             int64_t days_ahead,
                                             int64_t retention_days);

} // namespace troupe::storage
