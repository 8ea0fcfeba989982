#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

/// Read replicas (storage.replicas): reads that may be a little stale go to
/// a streaming replica whose measured lag is under storage.max_replica_lag_ms,
/// everything else (and every read while no replica qualifies) to the
/// primary's pool.
namespace troupe::runtime {

/// A WAL position "16/B374D848" as a number; nullopt if malformed.
std::optional<uint64_t> parse_lsn(const std::string& text);

/// How far behind the primary a replica is, in time, from samples of the
/// primary's WAL position: the replica has replayed everything the primary
/// had written at the newest sample whose position it has reached, so its
/// data is at most (now - that sample's time) old. Clock-free (one clock,
/// this node's), and an idle primary gives no false lag. Not thread-safe.
class lag_tracker {
public:
  /// Records the primary's position at `t_ms`; keeps the last `keep`.
  void primary_at(int64_t t_ms, uint64_t lsn);
  /// The lag, ms, of a replica that has replayed up to `replayed`: 0 when it
  /// has reached the newest sample; at least now - the oldest sample when
  /// it has reached none; -1 before any sample.
  int64_t lag_ms(int64_t now_ms, uint64_t replayed) const;

private:
  static constexpr size_t keep = 512;
  std::deque<std::pair<int64_t, uint64_t>> samples_;
};

/// What one replica looks like now, as /api/v1/cluster shows it.
struct replica_status {
  /// "replica-0" (its place in storage.replicas).
  std::string name;
  /// The data shard it replays (0: the catalog).
  size_t shard = 0;
  /// host:port from its URL (no credentials).
  std::string address;
  /// Answered the last probe and is in recovery (a replica).
  bool up = false;
  /// Measured lag (lag_tracker); -1 while unknown.
  int64_t lag_ms = -1;
  /// Bytes of WAL the primary had that it had not replayed; -1 unknown.
  int64_t behind_bytes = -1;
  /// Up, lag under the bound and the last probe recent: reads go there.
  bool serving = false;
  /// Reads it served.
  uint64_t reads = 0;
  /// Why it is left out, when it is.
  std::string why;
};

/// The replicas' status, shared by the router (writer) and the edge
/// (reader). Thread-safe.
class replica_board {
public:
  std::vector<replica_status> snapshot() const;
  void set(std::vector<replica_status> v);

private:
  mutable std::mutex mtx_;
  std::vector<replica_status> replicas_;
};

/// One replica a read router may send reads to.
struct replica_target {
  /// "replica-N", N its place in storage.replicas (metrics label, logs).
  std::string name;
  std::string url;
};

/// Spawns the read router of one data shard (`shard`): an actor that takes
/// db_job like a pool and hands each to a serving replica's pool (round
/// robin), else to `primary`. A job that finds its replica unreachable runs
/// again on the primary. One detached monitor per replica probes it and the
/// primary every `probe_interval_ms`; a replica of another database (its
/// system identifier differs from the primary's) never serves. With no
/// replicas it returns `primary` itself.
caf::actor spawn_read_router(caf::actor_system& sys, size_t shard,
                             caf::actor primary,
                             const std::string& primary_url,
                             const std::vector<replica_target>& replicas,
                             size_t workers, int64_t max_lag_ms,
                             int64_t connect_timeout_s,
                             std::shared_ptr<replica_board> board,
                             int64_t probe_interval_ms = 250);

} // namespace troupe::runtime
