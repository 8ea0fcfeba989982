#include "runtime/replicas.hpp"

#include <algorithm>
#include <chrono>
#include <limits>

#include <caf/all.hpp>

#include "cluster-config/errc.hpp"
#include "runtime/atoms.hpp"
#include "runtime/db_pool.hpp"
#include "runtime/logger.hpp"
#include "runtime/metrics.hpp"
#include "storage/pg.hpp"

namespace troupe::runtime {

std::optional<uint64_t> parse_lsn(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == text.size()
      || slash > 8 || text.size() - slash - 1 > 8)
    return std::nullopt;
  uint64_t hi = 0, lo = 0;
  auto hex = [](const std::string& s, uint64_t& out) {
    for (auto c : s) {
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                     : -1;
      if (d < 0)
        return false;
      out = out * 16 + static_cast<uint64_t>(d);
    }
    return true;
  };
  if (!hex(text.substr(0, slash), hi) || !hex(text.substr(slash + 1), lo))
    return std::nullopt;
  return hi << 32 | lo;
}

void lag_tracker::primary_at(int64_t t_ms, uint64_t lsn) {
  samples_.emplace_back(t_ms, lsn);
  while (samples_.size() > keep)
    samples_.pop_front();
}

int64_t lag_tracker::lag_ms(int64_t now_ms, uint64_t replayed) const {
  if (samples_.empty())
    return -1;
  if (replayed >= samples_.back().second)
    return 0;
  for (auto it = samples_.rbegin(); it != samples_.rend(); ++it)
    if (it->second <= replayed)
      return std::max<int64_t>(0, now_ms - it->first);
  return std::max<int64_t>(0, now_ms - samples_.front().first);
}

std::vector<replica_status> replica_board::snapshot() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return replicas_;
}

void replica_board::set(std::vector<replica_status> v) {
  std::lock_guard<std::mutex> guard{mtx_};
  replicas_ = std::move(v);
}

namespace {

using replica_atom = caf::atom_constant<caf::atom("replica")>;

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

// -- the monitor: one per replica, detached (its probes block) ---------------

struct monitor_state {
  std::string name = "replica_monitor";
  /// "replica-N".
  std::string replica_name;
  std::unique_ptr<storage::connection> primary;
  std::unique_ptr<storage::connection> replica;
  lag_tracker lag;
  /// The primary's pg_control_system().system_identifier, once known: a
  /// replica serves only with the same.
  std::string primary_system;
  /// The mismatch above was logged.
  bool warned_system = false;
};

/// Probes the primary's WAL position and the replica's replay position, and
/// reports (replica_atom, index, up, lag_ms, behind_bytes, why) to `router`.
caf::behavior replica_monitor(caf::stateful_actor<monitor_state>* self,
                              caf::actor router, size_t index,
                              std::string replica_name,
                              std::string primary_url, std::string replica_url,
                              int64_t connect_timeout_s, int64_t interval_ms) {
  auto& st = self->state;
  st.name = replica_name + "-monitor";
  st.replica_name = std::move(replica_name);
  st.primary = std::make_unique<storage::connection>(primary_url,
                                                     connect_timeout_s);
  st.replica = std::make_unique<storage::connection>(replica_url,
                                                     connect_timeout_s);
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      auto& st = self->state;
      std::optional<uint64_t> head;
      // A primary in recovery (mid-failover) has no write position: no
      // sample this time.
      if (auto p = st.primary->exec(
            "SELECT pg_current_wal_lsn()::text,"
            " (SELECT system_identifier FROM pg_control_system())::text");
          p && p->rows() == 1) {
        st.primary_system = p->str(0, 1);
        head = parse_lsn(p->str(0, 0));
        if (head)
          st.lag.primary_at(steady_ms(), *head);
      }
      bool up = false;
      int64_t lag = -1, behind = -1;
      std::string why;
      auto r = st.replica->exec(
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
        " (SELECT system_identifier FROM pg_control_system())::text");
      if (!r) {
        why = "unreachable: " + config::describe(r.error());
      } else if (r->rows() != 1 || !r->boolean(0, 0)) {
        why = "not a replica (pg_is_in_recovery() is false)";
      } else if (st.primary_system.empty()) {
        // Until the primary has answered once, nothing says the replica
        // holds its data.
        why = "the primary has not answered yet";
      } else if (r->str(0, 2) != st.primary_system) {
        // Its WAL positions mean nothing against this primary's: serving
        // reads from it would answer with another database's rows.
        why = "replays another database (system identifier " + r->str(0, 2)
              + ", the primary's " + st.primary_system + ")";
        if (!st.warned_system) {
          // A replica that did not answer at start was taken for the
          // catalog's; a node start places it on the shard it replays.
          st.warned_system = true;
          log().warn("{} left out of reads: it {}; if it replays another "
                     "data shard, restart the node to place it there",
                     st.replica_name, why);
        }
      } else if (auto replayed = parse_lsn(r->str(0, 1)); !replayed) {
        why = "no WAL replayed yet";
      } else {
        up = true;
        lag = st.lag.lag_ms(steady_ms(), *replayed);
        if (head)
          behind = *head > *replayed ? static_cast<int64_t>(*head - *replayed)
                                     : 0;
      }
      self->send(router, replica_atom::value, index, up, lag, behind, why);
      self->delayed_send(self, std::chrono::milliseconds(interval_ms),
                         tick_atom::value);
    },
  };
}

// -- the router --------------------------------------------------------------

struct replica_slot {
  caf::actor pool;
  caf::actor_addr monitor;
  replica_status status;
  int64_t reported_ms = 0;
  counter* reads = nullptr;
  gauge* up = nullptr;
  gauge* lag = nullptr;
  gauge* behind = nullptr;
};

struct router_state {
  std::string name = "read_router";
  caf::actor primary;
  std::vector<replica_slot> replicas;
  size_t next = 0;
  int64_t max_lag_ms = 0;
  /// A replica whose monitor has not reported for this long is left out
  /// (its probe hangs, e.g. on a dead host).
  int64_t stale_after_ms = 0;
  counter* fallback = nullptr;
  std::shared_ptr<replica_board> board;
};

using router_actor = caf::stateful_actor<router_state>;

/// Whether reads may go to `r` now; sets its `serving` and `why`.
bool judge(router_state& st, replica_slot& r, int64_t now) {
  auto& s = r.status;
  if (!s.up) {
    s.serving = false;
  } else if (now - r.reported_ms > st.stale_after_ms) {
    s.serving = false;
    s.why = "no probe answer for " + std::to_string(now - r.reported_ms)
            + " ms";
  } else if (s.lag_ms < 0 || s.lag_ms > st.max_lag_ms) {
    s.serving = false;
    s.why = "lag " + std::to_string(s.lag_ms) + " ms over "
            + std::to_string(st.max_lag_ms) + " ms";
  } else {
    s.serving = true;
    s.why.clear();
  }
  return s.serving;
}

void publish(router_state& st) {
  std::vector<replica_status> v;
  for (auto& r : st.replicas) {
    r.status.reads = r.reads->value();
    v.push_back(r.status);
  }
  st.board->set(std::move(v));
}

caf::behavior read_router(router_actor* self, size_t shard,
                          caf::actor primary, std::string primary_url,
                          std::vector<replica_target> targets, size_t workers,
                          int64_t max_lag_ms, int64_t connect_timeout_s,
                          std::shared_ptr<replica_board> board,
                          int64_t interval_ms) {
  auto& st = self->state;
  st.primary = std::move(primary);
  st.max_lag_ms = max_lag_ms;
  st.stale_after_ms = 2 * interval_ms + 1000;
  st.board = std::move(board);
  auto& reg = metrics();
  st.fallback = &reg.get_counter(
    "troupe_db_replica_fallback_reads_total",
    "Reads that could have gone to a replica but went to the primary (none "
    "serving, or the replica failed the read)");
  for (size_t i = 0; i < targets.size(); ++i) {
    replica_slot r;
    auto& name = targets[i].name;
    r.status.name = name;
    r.status.shard = shard;
    r.status.address = storage::url_address(targets[i].url);
    r.status.why = "not probed yet";
    r.pool = spawn_db_pool(self->system(), targets[i].url, workers,
                           connect_timeout_s, 10000, name);
    self->link_to(r.pool);
    auto l = "replica=\"" + name + "\"";
    r.reads = &reg.get_counter("troupe_db_replica_reads_total",
                               "Reads a replica served", l);
    r.up = &reg.get_gauge("troupe_db_replica_serving",
                          "1 while reads go to the replica", l);
    r.lag = &reg.get_gauge("troupe_db_replica_lag_ms",
                           "The replica's measured lag (-1: unknown)", l);
    r.behind = &reg.get_gauge("troupe_db_replica_behind_bytes",
                              "WAL bytes the replica has not replayed", l);
    r.lag->set(-1);
    auto mon = self->spawn<caf::detached + caf::linked>(
      replica_monitor, caf::actor_cast<caf::actor>(self), i, name,
      primary_url, targets[i].url, connect_timeout_s, interval_ms);
    r.monitor = mon.address();
    st.replicas.push_back(std::move(r));
  }
  publish(st);
  // A replica's pool or monitor that stops (it should not) takes that
  // replica out of reads; the router itself goes on, and stops only when
  // told to.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    auto& st = self->state;
    for (size_t i = 0; i < st.replicas.size(); ++i) {
      auto& r = st.replicas[i];
      if (msg.source == r.pool.address() || msg.source == r.monitor) {
        r.status.up = false;
        r.status.serving = false;
        r.status.why = "its pool or monitor stopped: " + to_string(msg.reason);
        r.reported_ms = std::numeric_limits<int64_t>::min() / 2;
        r.up->set(0);
        log().error("{} left out for good: {}", r.status.name, r.status.why);
        publish(st);
        return;
      }
    }
    self->quit(msg.reason);
  });
  return {
    [=](db_job& job) {
      auto& st = self->state;
      auto now = steady_ms();
      auto n = st.replicas.size();
      for (size_t k = 0; k < n; ++k) {
        auto i = (st.next + k) % n;
        auto& r = st.replicas[i];
        if (!judge(st, r, now))
          continue;
        st.next = i + 1;
        r.reads->inc();
        auto rp = self->make_response_promise();
        self->request(r.pool, std::chrono::seconds(30), job)
          .then([rp](ok_atom) mutable { rp.deliver(ok_atom::value); },
                [=](caf::error& err) mutable {
                  // A read that timed out may still be running there: it
                  // must not run a second time beside it (both would fill
                  // the caller's one result). The monitor leaves a hung
                  // replica out of later reads.
                  if (err == caf::sec::request_timeout) {
                    rp.deliver(std::move(err));
                    return;
                  }
                  // A replica that failed a read (stopped, a recovery
                  // conflict): the primary answers instead.
                  auto& st = self->state;
                  log().warn("{} read failed, retrying on the primary: {}",
                             st.replicas[i].status.name,
                             config::describe(err));
                  st.fallback->inc();
                  rp.delegate(st.primary, std::move(job));
                });
        return;
      }
      st.fallback->inc();
      self->delegate(st.primary, std::move(job));
    },
    [=](replica_atom, size_t i, bool up, int64_t lag, int64_t behind,
        std::string& why) {
      auto& st = self->state;
      if (i >= st.replicas.size()
          || st.replicas[i].reported_ms < 0) // left out for good
        return;
      auto& r = st.replicas[i];
      auto was = r.status.serving;
      r.reported_ms = steady_ms();
      r.status.up = up;
      r.status.lag_ms = lag;
      r.status.behind_bytes = behind;
      r.status.why = std::move(why);
      judge(st, r, r.reported_ms);
      r.up->set(r.status.serving ? 1 : 0);
      r.lag->set(lag);
      r.behind->set(behind);
      if (was != r.status.serving) {
        if (r.status.serving)
          log().info("{} ({}) serves reads: lag {} ms", r.status.name,
                     r.status.address, lag);
        else
          log().warn("{} ({}) left out of reads: {}", r.status.name,
                     r.status.address, r.status.why);
      }
      publish(st);
    },
  };
}

} // namespace

caf::actor spawn_read_router(caf::actor_system& sys, size_t shard,
                             caf::actor primary,
                             const std::string& primary_url,
                             const std::vector<replica_target>& replicas,
                             size_t workers, int64_t max_lag_ms,
                             int64_t connect_timeout_s,
                             std::shared_ptr<replica_board> board,
                             int64_t probe_interval_ms) {
  if (replicas.empty())
    return primary;
  return sys.spawn(read_router, shard, std::move(primary), primary_url,
                   replicas, workers, max_lag_ms, connect_timeout_s,
                   std::move(board), probe_interval_ms);
}

} // namespace troupe::runtime
