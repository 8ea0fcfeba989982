#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "cluster-config/node_config.hpp"
#include "runtime/supervisor.hpp"

namespace troupe::actors {

using runtime::restart_policy;

// -- pure logic (unit-tested in analysis.test.cpp) ---------------------------------

/// Whether `op` is a rule operator: > >= < <= == !=.
bool valid_op(const std::string& op);

/// `x op threshold`; false for an unknown operator.
bool compare(const std::string& op, double x, double threshold);

/// The points of a rule's window (the last for_s seconds).
struct window_stats {
  int64_t count = 0;
  double min = 0;
  double max = 0;
  /// Points equal to the threshold (for !=).
  int64_t equal = 0;
};

/// Whether a rule is breached. for_s == 0: the latest value breaches.
/// for_s > 0: the latest value and every point of the window breach, and
/// the window holds at least one point.
bool rule_breached(const std::string& op, double threshold, int64_t for_s,
                   double latest, const window_stats& w);

/// Whether an hourly average is an anomaly: it lies more than `z` sample
/// standard deviations from the mean of the `prior_n` previous hourly
/// averages (at most 24). Needs at least 3 prior hours. With a zero
/// deviation (a flat history), any change is an anomaly.
bool is_anomaly(double avg, int64_t prior_n, double prior_mean,
                double prior_sd, double z);

/// Failure counts of a pass's inputs (a device, a rule). An input that
/// failed `max_failures` passes is quarantined: skipped until the node
/// restarts, never retried forever. Owner: the analysis supervisor, per
/// pass (it outlives worker restarts). Not thread-safe.
class quarantine {
public:
  explicit quarantine(int64_t max_failures) : max_failures_(max_failures) {
  }

  /// Counts one failure of `unit`; true when it quarantines the unit now.
  bool fail(const std::string& unit);

  bool contains(const std::string& unit) const {
    return units_.count(unit) > 0;
  }

  /// The quarantined units, sorted.
  std::vector<std::string> units() const {
    return {units_.begin(), units_.end()};
  }

  size_t size() const { return units_.size(); }

private:
  int64_t max_failures_;
  std::map<std::string, int64_t> failures_;
  std::set<std::string> units_;
};

// -- the supervisor --------------------------------------------------------------

/// The shards whose devices this node analyses now; nullopt: all. Called
/// from the analysis supervisor's thread.
using owned_shards_fn
  = std::function<std::optional<std::vector<int32_t>>()>;

/// Spawns the node's analysis supervisor. It owns one worker per pass
/// (`rollups`, `rules`, `anomaly`, `silence`), each a detached actor with
/// its own PostgreSQL connection (its queries block), spawned monitored.
/// Every `cfg.interval_ms` it asks each idle worker for a pass (anomaly
/// right after rollups, which it reads); a pass still running is not
/// started twice.
///
/// ```
///   tick -> run rollups -> run anomaly
///        -> run rules
///        -> run silence
///   worker down -> (backoff, restart-intensity window) -> restart
/// ```
///
/// Failures: a pass whose set-based query fails redoes its work per input
/// (device or rule) and reports the inputs that fail; an input failing
/// `cfg.max_unit_failures` passes is quarantined (counted, logged, then
/// skipped). A worker that throws or hangs is restarted with backoff; too
/// many restarts within the window keep it down for a window.
/// Metrics: troupe_analysis_runs_total{pass}, _failures_total{pass},
/// _restarts_total, _quarantined_total, troupe_alerts_opened_total.
///
/// Each pass covers the devices of the shards `owned()` names when the
/// pass starts (nullopt: every device, a single node), so in a cluster each
/// device is analysed by one node, and a moved shard's analysis moves with
/// it at the next pass. troupe_analysis_last_pass_items{pass} shows what
/// the last pass processed here.
///
/// With write shards there is one analysis per data shard, each on its
/// shard's database (`database_url`); those of shards other than 0 copy
/// the catalog's rules (`catalog_url`) before each rules pass, and label
/// their metrics data_shard="N".
///
/// Owner: actors::install; stops on `runtime::stop_atom` (its workers finish
/// the query in progress, then exit).
caf::actor spawn_analysis(caf::actor_system& sys,
                          const config::analysis_config& cfg,
                          const std::string& database_url,
                          int64_t connect_timeout_s, owned_shards_fn owned,
                          const std::string& catalog_url = {},
                          size_t data_shard = 0);

} // namespace troupe::actors
