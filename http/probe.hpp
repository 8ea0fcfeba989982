#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "runtime/metrics.hpp"

namespace troupe::http {

/// The edge's metrics, each declared once here: requests by route, method
/// and status with latency per route; requests in flight; long-polls held;
/// connections open; refusals by reason (the server's limits); retries of
/// requests that met a moving shard; latency of requests served by another
/// node. Thread-safe: series are looked up once and then updated lock-free.
class edge_probe {
public:
  edge_probe();

  void request_done(const std::string& route, std::string_view method,
                    unsigned status, double seconds);
  void refused(std::string_view reason);

  runtime::gauge& in_flight;
  runtime::gauge& long_polls;
  runtime::gauge& connections;
  runtime::counter& moved_retries;
  runtime::histogram& remote_calls;

private:
  std::mutex mtx_;
  std::unordered_map<std::string, runtime::counter*> requests_;
  std::unordered_map<std::string, runtime::histogram*> latency_;
  std::unordered_map<std::string, runtime::counter*> refusals_;
};

} // namespace troupe::http
