#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>

#include "cluster-config/node_config.hpp"

namespace troupe::actors {

/// One data shard (storage.shards; shard 0 is the catalog's database).
struct data_shard {
  /// Its database pool: writes, and reads of a device's own writes.
  caf::actor db;
  /// Reads that may be a little stale (shard 0: the read router).
  caf::actor reads;
  /// Its importers; a device uses importers[key % size()] of its shard.
  std::vector<caf::actor> importers;
};

/// What every troupe actor on a node shares: its settings, the handles of
/// the node's services, and the ingest admission counter. Built once by
/// install() before any actor runs; read-only afterwards except for the
/// atomic counter.
struct context {
  config::actors_config actors;
  config::ingest_config ingest;
  /// Supervision settings (restart backoff and intensity) are shared with
  /// the analysis workers.
  config::analysis_config analysis;
  /// Login throttling.
  config::auth_config auth;
  std::string node_id;
  /// storage.standby_policy: what a 202 for telemetry needs.
  std::string standby_policy = "none";
  /// The cluster's shard count (cluster.shards).
  size_t shards = 0;
  /// Key for keyed hashes of device secrets and tokens (cluster-wide).
  std::string secret_key;
  /// Database pool (runtime::spawn_db_pool): writes, and reads that must
  /// see the caller's own writes.
  caf::actor db;
  /// Reads that may be a little stale (history, buckets, rollups, lists):
  /// a replica when one is current enough, else db (runtime/replicas.hpp).
  caf::actor reads;
  /// Loads device states in batches (device_loader.hpp).
  caf::actor device_loader;
  /// The data shards, by number: data[0] uses db and reads above.
  std::vector<data_shard> data;
  /// Whether data shard i answered the node's last health check (a load
  /// of a device on a shard known to be down fails at once, instead of
  /// holding the loader's batch until a connect timeout).
  std::function<bool(size_t)> shard_up = [](size_t) { return true; };
  /// Shard regions.
  caf::actor devices;
  caf::actor sessions;
  caf::actor users;
  /// Points accepted into importer queues and not yet answered: the bound
  /// behind 429.
  std::shared_ptr<std::atomic<int64_t>> queued_points
    = std::make_shared<std::atomic<int64_t>>(0);
};

using context_ptr = std::shared_ptr<context>;

/// Milliseconds since the Unix epoch.
int64_t now_ms();

} // namespace troupe::actors
