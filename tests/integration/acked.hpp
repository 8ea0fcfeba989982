#pragma once

// What an upload load test needs to prove nothing acknowledged was lost:
// the devices it drove, the batches answered 202, and a direct-SQL check
// that every such point is in the telemetry table. Shared by the durability
// tests and the cluster tests.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/harness.hpp"

namespace troupe::test {

/// The metric every load test uploads, so its points can be told apart.
constexpr const char* load_metric = "load";

struct device_state {
  size_t index = 0;
  std::string id;
  std::string secret;
  std::string token;
  int64_t next_batch = 1;
  int64_t next_seq = 0;
};

/// A batch answered 202: the device (index) and the body sent.
struct acked_batch {
  size_t device = 0;
  int64_t batch_id = 0;
  json body;
};

struct verdict {
  size_t acked_points = 0;
  size_t missing = 0;
  size_t wrong_value = 0;
  size_t rows = 0;
  std::string first_missing;
};

/// Direct SQL on telemetry ⋈ devices ⋈ metrics of each of `dbs` (the
/// data databases: one, or the catalog and the write shards): is every
/// point of `acked` stored with its value in one of them? Polls up to
/// `timeout` (a spool may still replay, PostgreSQL may still be coming up).
verdict wait_stored(const std::vector<std::shared_ptr<database>>& dbs,
                    const std::vector<acked_batch>& acked,
                    const std::vector<device_state>& devices,
                    std::chrono::milliseconds timeout);

/// "202:123 503:4 " for a count of answers by status (0: no answer).
std::string describe(const std::map<int, size_t>& statuses);

} // namespace troupe::test
