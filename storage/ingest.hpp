#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/error.hpp>

#include "storage/pg.hpp"

namespace troupe::storage {

/// One telemetry point on its way to PostgreSQL.
struct point_row {
  int64_t device_key = 0;
  std::string metric;
  int64_t ts_ms = 0;
  double value = 0;
};

/// Per-device bookkeeping committed with the points: the batch-id
/// high-water mark (for deduplication after a reload) and last-seen time.
/// The mark goes to the device's latest values, which the commit writes
/// anyway; the devices row is updated only when `last_seen_ms` is set (or
/// the batch has no point of the device).
struct device_mark {
  int64_t device_key = 0;
  int64_t batch_hwm = -1; // -1: no batch id in this flush
  int64_t last_seen_ms = 0; // -1: devices.last_seen_ms is recent enough
};

/// Everything one group commit writes.
struct ingest_batch {
  std::vector<point_row> points;
  std::vector<device_mark> marks;
};

/// The hour (UTC, counted from the epoch) a point in epoch milliseconds
/// falls in; floors, also before 1970.
inline int64_t hour_of(int64_t ts_ms) {
  return (ts_ms >= 0 ? ts_ms : ts_ms - 3'599'999) / 3'600'000;
}

/// A batch's points as rows of telemetry_chunks: one chunk per (device,
/// metric, hour), in key order, its points in upload order. The i-th
/// chunk's points are ms/values[offsets[i] - 1 .. + counts[i]) (offsets
/// count from 1, as PostgreSQL's array slices do).
struct point_chunks {
  std::vector<int64_t> keys;
  std::vector<int64_t> metrics;
  std::vector<int64_t> hours;
  std::vector<int64_t> offsets;
  std::vector<int64_t> counts;
  std::vector<int64_t> ms;
  std::vector<double> values;
};

/// Groups a batch's points into chunks; metric_ids[i] is point i's metric.
point_chunks chunk_points(const ingest_batch& batch,
                          const std::vector<int32_t>& metric_ids);

/// Serializes a batch for the spool; decode returns false on corrupt input.
std::string encode_batch(const ingest_batch& batch);
bool decode_batch(const std::string& bytes, ingest_batch& out);

/// Writes ingest batches in one transaction each: the points as chunks
/// into telemetry_chunks, the latest values, what they add to each hour's
/// rollup and the device marks (one statement for a fresh batch). Owned by one importer actor
/// (not thread-safe). Caches metric ids.
class ingest_writer {
public:
  /// With `need_standby`, write() also asks, after its commit, whether a
  /// standby has the commit (see standby_has); without, a commit on the
  /// primary is the end of it.
  explicit ingest_writer(std::string url, int64_t connect_timeout_s = 5,
                         bool need_standby = false);

  /// How a batch is written.
  enum class mode {
    /// A batch never offered to PostgreSQL before.
    fresh,
    /// A batch from the spool: it may have been committed already (the
    /// answer to its COMMIT was lost, or an earlier replay stopped after
    /// it), so a chunk identical to a stored one (device, metric, hour,
    /// timestamps and values: the same batch groups into the same chunks)
    /// is not stored again. Slower; only replays use it.
    replay,
  };

  /// Commits the batch; unavailable when PostgreSQL cannot be reached (the
  /// transaction is then not committed, or its outcome is unknown);
  /// unreplicated when it committed on the primary but (with need_standby)
  /// no standby confirmed it.
  [[nodiscard]] caf::error write(const ingest_batch& batch,
                                 mode how = mode::fresh);

  /// Whether a synchronous standby has flushed everything the primary had
  /// written when asked (so every commit of this writer so far), and the
  /// primary's commits wait for one: synchronous_standby_names is set
  /// (pg_auto_failover clears it while the primary runs alone, in
  /// wait_primary), synchronous_commit waits for a flush, and a sync or
  /// quorum standby's flush_lsn has reached the primary's insert position
  /// (it gets a few looks over ~32 ms, as commits of other sessions may be
  /// in flight). Reading flush_lsn and sync_state in pg_stat_replication
  /// needs pg_read_all_stats (pg_monitor has it). Updates epoch().
  [[nodiscard]] caf::expected<bool> standby_has();

  /// Which primary the last standby_has() (or write with need_standby)
  /// talked to: timeline, address and start time. Two commits seen with the
  /// same epoch are in one primary's history. Empty before any.
  const std::string& epoch() const { return epoch_; }

  connection& conn() { return conn_; }

private:
  caf::error resolve_metrics(const ingest_batch& batch,
                             std::vector<int32_t>& ids);
  /// After a commit: none, or (with need_standby) unreplicated.
  caf::error confirm();
  connection conn_;
  bool need_standby_;
  std::string epoch_;
  std::unordered_map<std::string, int32_t> metric_ids_;
};

} // namespace troupe::storage
