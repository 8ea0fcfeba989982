#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "cluster-config/node_config.hpp"
#include "runtime/cluster.hpp"
#include "runtime/replicas.hpp"
#include "runtime/shard_map.hpp"
#include "runtime/shard_region.hpp"

namespace troupe::storage {
class connection;
} // namespace troupe::storage

namespace troupe::runtime {

/// A standby of the primary, from pg_stat_replication.
struct standby_status {
  std::string name;    // application_name
  std::string state;   // streaming, catchup, ...
  std::string sync;    // sync, quorum, potential, async
  int64_t lag_ms = 0;  // replay_lag
};

/// One troupe node: owns the actor system, the storage setup (embedded
/// PostgreSQL or a configured URL, migrations, partitions), the database
/// pool, and the services that main() installs (actors, then http).
///
/// Lifecycle (run()): logging -> storage -> actor system -> db pool ->
/// services in the order added -> wait for SIGTERM/SIGINT or request_stop()
/// -> services stopped in reverse order (http drains first) -> actor system
/// -> embedded PostgreSQL. A service registers its stop action together with
/// its start action, so shutdown mirrors startup.
///
/// Thread-safety: accessors may be called from any thread once run() has
/// started the services; set_actor() only from service start functions.
class node {
public:
  using start_fn = std::function<caf::error(node&)>;
  using stop_fn = std::function<void(node&)>;

  explicit node(config::node_config cfg);
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  /// Adds a service; started in order, stopped in reverse.
  void add_service(std::string name, start_fn start, stop_fn stop);

  /// Runs `fn` on SIGHUP (e.g. the edge reloads its TLS certificate), on
  /// the thread that waits for signals.
  void on_reload(std::function<void()> fn);

  /// Runs `fn` on CAF's config before the actor system starts (modules
  /// register the message types that cross nodes here).
  void on_configure(std::function<void(caf::actor_system_config&)> fn);

  /// True when this node is part of a cluster (cluster.listen is set).
  bool clustered() const { return !cfg_.cluster.listen.empty(); }

  /// The cluster as the membership service last saw it (thread-safe).
  cluster_view view() const;
  void set_cluster_view(cluster_view v);

  /// The newest shard map this node applied (lock-free; null on a single
  /// node). The edge uses it to tell local from remote calls.
  std::shared_ptr<const shard_map> current_map() const {
    return std::atomic_load(&map_);
  }
  void set_current_map(std::shared_ptr<const shard_map> m) {
    std::atomic_store(&map_, std::move(m));
  }

  /// Runs the node until a stop signal; returns the process exit code.
  int run();

  /// Asks run() to stop (as SIGTERM does).
  void request_stop();

  // -- accessors for services ------------------------------------------------

  caf::actor_system& system();
  const config::node_config& cfg() const { return cfg_; }
  const std::string& id() const { return id_; }
  const std::string& database_url() const { return database_url_; }
  /// The cluster-wide key for keyed hashes of secrets and tokens.
  const std::string& secret_key() const { return secret_key_; }
  /// The database pool (see db_pool.hpp).
  caf::actor db() const { return db_; }
  /// Where the catalog's reads that may be a little stale go: its read
  /// router over its replicas in storage.replicas, or db() itself without
  /// (replicas.hpp).
  caf::actor reads() const { return shard_reads_.at(0); }
  /// The data shards' databases: [0] is database_url() (the catalog),
  /// [i] is storage.shards[i - 1].
  const std::vector<std::string>& shard_urls() const { return shard_urls_; }
  /// The database pool of data shard i (db() for 0).
  caf::actor shard_db(size_t i) const { return shard_dbs_.at(i); }
  /// Where data shard i's reads that may be a little stale go: its read
  /// router over its replicas, or shard_db(i) itself without (reads() for
  /// 0).
  caf::actor shard_reads(size_t i) const { return shard_reads_.at(i); }
  /// True while data shard i answers (health loop; 0 is database_up()).
  bool shard_up(size_t i) const;
  /// The replicas as the read routers last judged them, shard by shard.
  std::vector<replica_status> replicas() const;
  /// The primary's standbys as pg_stat_replication showed them last
  /// (health loop, each second; empty when it has none or cannot see them).
  std::vector<standby_status> standbys() const;
  /// This node's membership lease (cluster nodes; see shard_region.hpp).
  const lease_clock& lease() const { return lease_; }
  int64_t started_ms() const { return started_ms_; }

  /// The membership actor of a cluster node (null on a single node or
  /// before the cluster service started); it takes (drain_atom, id).
  void set_membership(caf::actor a);
  caf::actor membership() const;

  /// True once storage is reachable and services run; else `why` says why.
  bool ready(std::string* why = nullptr) const;
  /// True while the primary answers and the pool serves (health loop).
  bool database_up() const { return db_ok_.load(); }
  /// True while the node is stopping.
  bool stopping() const { return stopping_.load(); }

private:
  caf::error start_storage();
  /// Checks what storage.standby_policy needs of the role and settings.
  caf::error check_standby_policy(storage::connection& conn) const;
  /// Checks storage.replicas[i]: a connection string, not a primary, and
  /// which data shard it replays (the shard recorded in its database; one
  /// of the catalog must have the catalog's system identifier,
  /// `catalog_system`). A replica that does not answer yet is taken for
  /// the catalog's (its monitor leaves it out if it is not).
  caf::expected<size_t> check_replica(size_t i,
                                      const std::string& catalog_system) const;
  /// Connects to a database of the tier (retrying while it starts), checks
  /// the standby policy, migrates it and creates its partitions.
  caf::error prepare_database(storage::connection& conn,
                              const std::string& what);
  /// Sets up data shard i (storage.shards[i - 1]): prepared like the
  /// catalog, then checked to be shard i (settings.data_shard) and recorded
  /// in the catalog's data_shards.
  caf::error start_shard(storage::connection& catalog, size_t i);
  /// Migrates data shard i and checks that the database is shard i; when
  /// the catalog already `recorded` it, the database must say so already.
  caf::error prepare_shard(storage::connection& conn, size_t i,
                           bool recorded);
  void health_loop();
  /// One look at data shard i from the health loop: up or down, prepared
  /// when it was down at start, partitions kept and copies of deleted
  /// devices swept (against `catalog`) when `maintain`.
  void check_shard(storage::connection& conn, size_t i, bool maintain,
                   storage::connection& catalog);
  /// True when a job through the database pool succeeds (within 2 s).
  bool pool_serves();

  config::node_config cfg_;
  std::string id_;
  std::string database_url_;
  std::string secret_key_;
  int64_t started_ms_ = 0;
  struct service {
    std::string name;
    start_fn start;
    stop_fn stop;
  };
  std::vector<service> services_;
  std::vector<std::function<void(caf::actor_system_config&)>> configure_;
  std::vector<std::function<void()>> reload_;
  std::shared_ptr<const shard_map> map_;
  lease_clock lease_ = std::make_shared<runtime::lease>();
  mutable std::mutex view_mtx_;
  cluster_view view_;
  struct impl;
  std::unique_ptr<impl> impl_;
  caf::actor db_;
  std::vector<std::string> shard_urls_;
  std::vector<caf::actor> shard_dbs_;
  std::vector<caf::actor> shard_reads_;
  /// The data shard that storage.replicas[i] replays (start_storage).
  std::vector<size_t> replica_shard_;
  std::unique_ptr<std::atomic<bool>[]> shard_ok_;
  /// Whether data shard i was migrated by this node (health loop thread
  /// after start).
  std::vector<bool> shard_ready_;
  /// One per data shard.
  std::vector<std::shared_ptr<replica_board>> boards_;
  std::vector<standby_status> standbys_; // guarded by view_mtx_
  mutable std::mutex actors_mtx_;
  caf::actor membership_;
  std::atomic<bool> db_ok_{false};
  std::atomic<bool> services_up_{false};
  std::atomic<bool> stopping_{false};
};

} // namespace troupe::runtime
