#pragma once

// Cluster-test helpers on top of the integration harness
// (tests/integration/harness.hpp): several `troupe serve` nodes on one shared
// PostgreSQL database, /metrics and /api/v1/cluster readers, an upload load
// spread over nodes, and a sampler that watches `troupe_shards_served` on
// every live node to catch a shard served by two nodes at once.

#include "tests/integration/acked.hpp"
#include "tests/integration/harness.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace troupe::test::cluster {

/// Shard count (cluster.shards default).
constexpr int64_t shard_count = 1024;

/// Cluster timing used by the tests: fast heartbeats so failover is quick.
constexpr int heartbeat_ms = 500;
constexpr int lease_ms = 3000;

// -- metrics -------------------------------------------------------------------

// metric_value(), metric() and metric_sum() come from the integration
// harness.

/// `troupe_shards_owned{kind="device"}` etc.
std::string series(const std::string& name, const std::string& kind);

// -- the cluster ----------------------------------------------------------------

/// Nodes sharing one fresh database. Nodes are stopped in the destructor with
/// SIGKILL (a clean stop of the last member of a cluster waits for a drain
/// nobody can take; tests that check the clean stop call node::stop).
class test_cluster {
public:
  test_cluster();
  ~test_cluster();
  test_cluster(const test_cluster&) = delete;
  test_cluster& operator=(const test_cluster&) = delete;

  /// Starts node `id` (cluster.node_id) and waits until /readyz answers 200.
  /// `before_start(http_port)` runs once the HTTP port is chosen, before the
  /// process starts (e.g. to add the node to a sampler). `extra` settings
  /// are added to the cluster's.
  node& add(const std::string& id,
            const std::function<void(int)>& before_start = {},
            const std::vector<std::pair<std::string, std::string>>& extra
            = {});

  node& at(size_t i) { return *nodes_.at(i); }
  size_t size() const { return nodes_.size(); }
  /// The catalog (members, shard maps, devices).
  std::shared_ptr<database> db() const { return db_; }
  /// Every data database: the catalog, then the data shards.
  std::vector<std::shared_ptr<database>> data_dbs() const;
  const std::string& id_of(size_t i) const { return ids_.at(i); }

private:
  std::shared_ptr<database> db_;
  /// With TROUPE_TEST_DATA_SHARDS=N (N > 1), N - 1 more databases that
  /// every node lists in storage.shards: the cluster tests run again on a
  /// sharded tier (ctest cluster.*.sharded).
  std::vector<std::shared_ptr<database>> shards_;
  std::vector<std::unique_ptr<node>> nodes_;
  std::vector<std::string> ids_;
};

/// GET /api/v1/cluster on `n` (admin token); throws unless 200 with an object.
json cluster_view(node& n);

/// The members entry with `id` in a cluster view; null when absent.
json member_of(const json& view, const std::string& id);

/// Waits (bounded) until every node in `nodes` reports the same members
/// (`ids`, all alive), the same map version, and shards summing to 1024 over
/// members; returns "" or a description of the last mismatch.
std::string wait_converged(const std::vector<node*>& nodes,
                           const std::vector<std::string>& ids,
                           std::chrono::milliseconds timeout);

/// Direct SQL: problems with the newest shard_maps row: a shard whose owner
/// is not a live member (state alive and heartbeat within the lease, by the
/// database clock), or a row with the wrong number of shards. "" when fine.
std::string newest_map_problems(const database& db);

// -- the served-shards sampler ----------------------------------------------------

/// Polls `troupe_shards_served{kind=device|session}` on each watched node in
/// turn (keep-alive connections, one round every millisecond or so) and
/// records, per kind, the largest sum over nodes in a round.
///
/// Why a sum > 1024 means a shard served twice: if node A is read at tA
/// (serving s) and node B at tB > tA (serving s) while the handoff A -> B was
/// correct, A stopped and B started inside [tA, tB], so the whole handoff gap
/// fit into one round. That gap is at least about one heartbeat (the new
/// owner serves only past the barrier, i.e. once the old owner recorded the
/// new map in a later heartbeat). So a round shorter than half a heartbeat
/// that sums to more than 1024 is a violation; a rare slow round (a node
/// busy answering) that does is only reported as inconclusive.
constexpr double conclusive_round_ms = heartbeat_ms / 2.0;

class served_sampler {
public:
  served_sampler();
  ~served_sampler();

  /// Starts watching (the node may not be up yet: no answer reads as 0).
  void watch(const std::string& id, int port);
  /// Stops watching (before the node is killed or stopped).
  void unwatch(const std::string& id);
  void stop();

  struct report {
    size_t rounds = 0;
    size_t errors = 0;
    double max_round_ms = 0;
    double avg_round_ms = 0;
    size_t slow_rounds = 0;                 // longer than conclusive_round_ms
    std::map<std::string, int64_t> max_sum; // per kind, conclusive rounds
    std::vector<std::string> violations;    // first few
    std::vector<std::string> inconclusive;  // > 1024 in a slow round
  };
  report result();

private:
  void run();

  std::mutex mtx_;
  std::map<std::string, int> ports_;
  std::atomic<bool> stop_{false};
  report rep_;
  double total_ms_ = 0;
  std::thread thread_;
};

// -- upload load -------------------------------------------------------------------

constexpr int points_per_batch = 10;

/// Registers `count` devices in a fresh tenant through `reg` and logs each
/// in through a node picked round robin from `login_via`.
std::vector<device_state> setup_devices(node& reg, std::vector<node*> login_via,
                                        size_t count);

/// Uploads from `threads` threads (each owning every threads-th device, so a
/// device's batch ids grow in order) to a random node among the current
/// targets, until stopped. Every batch gets a fresh batch id. Records every
/// batch answered 202; 429/503 and no answer are "retry later" and open a
/// failure stretch for the device that the next 202 closes; anything else is
/// unexpected.
class upload_load {
public:
  upload_load(std::vector<node*> targets, std::vector<device_state> devices,
              int64_t base_ts, size_t threads = 8);
  ~upload_load();

  void set_targets(std::vector<node*> targets);
  void stop();

  size_t acked_batches() const { return acked_count_; }
  std::vector<acked_batch> acked();
  std::map<int, size_t> statuses();
  std::vector<std::string> unexpected();
  /// Longest time a device went without a 202 while it kept trying: from
  /// sending the first attempt that did not end in a 202 (or a slow 202) to
  /// the 202 that ended it; open stretches count up to now. With the id.
  std::pair<double, std::string> longest_failure_s();
  /// The slowest answer (or transport failure), described.
  std::string slowest_answer();
  /// Steady time of each device's last 202.
  std::vector<clock_type::time_point> last_success();
  const std::vector<device_state>& devices() const { return devices_; }

private:
  void note(int status, const std::string& what);
  void run(size_t first, size_t step);
  node* pick(std::mt19937& rng);

  std::mutex targets_mtx_;
  std::vector<node*> targets_;
  std::vector<device_state> devices_;
  int64_t base_ts_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> acked_count_{0};
  std::mutex mtx_;
  std::vector<acked_batch> acked_;
  std::map<int, size_t> statuses_;
  std::vector<std::string> unexpected_;
  std::vector<std::optional<clock_type::time_point>> failing_since_;
  std::vector<clock_type::time_point> last_ok_;
  double longest_s_ = 0;
  double slowest_s_ = 0;
  std::string slowest_;
  std::string longest_dev_;
  std::vector<std::thread> threads_;
};

} // namespace troupe::test::cluster
