#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

/// Default values of every setting in `node_config`, in one place (as
/// caf/defaults.hpp does for CAF). Units are in the names.
namespace troupe::config::defaults {

namespace http {
constexpr const char* listen = "127.0.0.1:8080";
constexpr size_t io_threads = 0;
constexpr int64_t backlog = 4096;
constexpr size_t max_connections = 16384;
constexpr size_t max_header_bytes = 16 * 1024;
constexpr size_t max_body_bytes = 1 << 20;
constexpr int64_t header_timeout_ms = 10'000;
constexpr int64_t body_timeout_ms = 30'000;
constexpr int64_t keep_alive_s = 120;
constexpr size_t max_pipelined = 16;
constexpr size_t max_long_polls = 20'000;
constexpr int64_t request_timeout_ms = 10'000;
constexpr size_t gzip_min_bytes = 1024;
constexpr size_t max_json_depth = 32;
} // namespace http

namespace auth {
constexpr int64_t failed_login_window_s = 300;
constexpr int64_t max_failed_logins = 10;
constexpr int64_t max_failed_logins_per_address = 100;
} // namespace auth

namespace storage {
constexpr const char* data_dir = "./troupe-data";
constexpr int64_t connect_timeout_s = 5;
constexpr size_t spool_max_bytes = size_t{1} << 30;
constexpr int64_t partition_days_ahead = 3;
constexpr int64_t retention_days = 90;
constexpr const char* standby_policy = "none";
constexpr int64_t max_replica_lag_ms = 1000;
} // namespace storage

namespace ingest {
constexpr size_t importers = 1;
constexpr size_t max_batch_points = 10'000;
constexpr int64_t flush_interval_ms = 0;
constexpr size_t max_points_per_request = 10'000;
constexpr size_t max_queued_points = 500'000;
constexpr int64_t max_age_days = 30;
constexpr int64_t max_future_s = 300;
} // namespace ingest

namespace actors {
constexpr int64_t passivate_after_s = 600;
constexpr int64_t session_idle_s = 1800;
constexpr int64_t device_token_ttl_s = 86'400;
constexpr int64_t command_ttl_s = 86'400;
constexpr int64_t online_window_s = 300;
constexpr size_t db_workers = 4;
constexpr const char* scheduler_policy = "auto";
constexpr size_t scheduler_threads = 0;
} // namespace actors

namespace cluster {
constexpr size_t shards = 1024;
constexpr int64_t heartbeat_ms = 1000;
constexpr int64_t lease_ms = 5000;
} // namespace cluster

namespace log {
constexpr const char* level = "info";
} // namespace log

namespace analysis {
constexpr int64_t interval_ms = 30'000;
constexpr int64_t silence_s = 900;
constexpr int64_t anomaly_z_tenths = 30;
constexpr int64_t max_restarts = 5;
constexpr int64_t restart_window_s = 60;
constexpr int64_t restart_backoff_ms = 500;
constexpr int64_t max_unit_failures = 3;
} // namespace analysis

} // namespace troupe::config::defaults
