#include "actors/importer.hpp"

#include <chrono>
#include <optional>

#include <caf/all.hpp>

#include "actors/errc.hpp"
#include "actors/logger.hpp"
#include "actors/types.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/metrics.hpp"
#include "runtime/supervisor.hpp"
#include "storage/errc.hpp"
#include "storage/spool.hpp"

namespace troupe::actors {

namespace {

using runtime::ok_atom;

/// The importer's probe: its metrics, looked up once.
struct importer_probe {
  runtime::counter* points;
  runtime::counter* flushes;
  runtime::counter* flush_errors;
  runtime::counter* spooled;
  runtime::counter* replayed;
  runtime::histogram* flush_seconds;
  runtime::histogram* batch_points;
  runtime::counter* unreplicated;
  runtime::gauge* spool_bytes;
  runtime::gauge* queued;
  runtime::gauge* alone;

  explicit importer_probe(const std::string& id) {
    auto& r = runtime::metrics();
    auto l = "importer=\"" + id + "\"";
    points = &r.get_counter("troupe_ingest_points_total",
                            "Points committed to PostgreSQL or the spool", l);
    flushes = &r.get_counter("troupe_ingest_flushes_total",
                             "Group commits", l);
    flush_errors = &r.get_counter("troupe_ingest_flush_errors_total",
                                  "Group commits that failed", l);
    spooled = &r.get_counter("troupe_spool_records_total",
                             "Batches written to the local spool", l);
    replayed = &r.get_counter("troupe_spool_replayed_total",
                              "Spooled batches replayed into PostgreSQL", l);
    flush_seconds = &r.get_histogram("troupe_ingest_flush_seconds",
                                     "Group commit latency", l);
    batch_points = &r.get_histogram("troupe_ingest_batch_points",
                                    "Points per group commit", l,
                                    runtime::size_buckets());
    unreplicated = &r.get_counter(
      "troupe_ingest_unreplicated_batches_total",
      "Batches committed on the primary that no synchronous standby had "
      "confirmed (storage.standby_policy)",
      l);
    spool_bytes = &r.get_gauge("troupe_spool_bytes", "Bytes in the spool", l);
    alone = &r.get_gauge("troupe_ingest_primary_alone",
                         "1 while the primary's last commit had no standby "
                         "(storage.standby_policy spool or warn)",
                         l);
    queued = &r.get_gauge("troupe_import_queue_points",
                          "Points waiting in the importer", l);
  }
};

struct part {
  caf::response_promise rp;
  storage::ingest_batch batch;
};

struct importer_state {
  std::string name = "importer";
  context_ptr ctx;
  std::unique_ptr<storage::ingest_writer> writer;
  std::unique_ptr<storage::spool> spool;
  std::vector<part> parts;
  size_t pending_points = 0;
  bool flush_armed = false;
  bool replay_armed = false;
  /// storage.standby_policy is "spool": unreplicated commits are spooled too.
  bool spool_unreplicated = false;
  /// The last commit had no standby (the primary runs alone).
  bool alone = false;
  /// Every spooled record is also in PostgreSQL, committed by the primary
  /// of `spool_epoch` (spooled after a commit without a standby, or written
  /// by a replay that kept it): while that primary runs alone the replay
  /// need not run again, and once a standby has caught up with it the
  /// spool is emptied without one.
  bool spool_in_pg = false;
  std::string spool_epoch;
  /// Since when writes to PostgreSQL fail (unset while they succeed).
  std::optional<std::chrono::steady_clock::time_point> failing_since;
  /// Group commits so far (fault injection counts them).
  uint64_t flushes = 0;
  std::unique_ptr<importer_probe> probe;

  /// Requests still held when the importer goes without its handlers
  /// running (a kill) are answered here: device actors await these answers
  /// without a deadline of their own (a CAF request timeout costs a wake-up
  /// of CAF's clock thread per upload, and one more message when it fires).
  ~importer_state() {
    for (auto& p : parts)
      p.rp.deliver(make_actor_error(errc::unavailable,
                                    "the importer stopped; retry"));
    if (ctx && pending_points > 0)
      ctx->queued_points->fetch_sub(static_cast<int64_t>(pending_points));
  }
};

using importer_actor = caf::stateful_actor<importer_state>;

void merge(storage::ingest_batch& into, const storage::ingest_batch& from) {
  into.points.insert(into.points.end(), from.points.begin(), from.points.end());
  into.marks.insert(into.marks.end(), from.marks.begin(), from.marks.end());
}

/// Notes whether a write reached PostgreSQL, logging the ends of outages.
void set_writable(importer_actor* self, bool ok) {
  auto& st = self->state;
  if (!ok) {
    if (!st.failing_since)
      st.failing_since = std::chrono::steady_clock::now();
    return;
  }
  if (!st.failing_since)
    return;
  auto gap = std::chrono::duration<double>(std::chrono::steady_clock::now()
                                           - *st.failing_since)
               .count();
  st.failing_since.reset();
  log().info("{} PostgreSQL takes writes again after {:.1f} s", st.name, gap);
}

/// Notes whether the primary's last commit had a standby, logging changes.
void set_alone(importer_actor* self, bool alone) {
  auto& st = self->state;
  if (alone == st.alone)
    return;
  st.alone = alone;
  st.probe->alone->set(alone ? 1 : 0);
  if (alone)
    log().warn("{} the primary commits without a synchronous standby; {}",
               st.name,
               st.spool_unreplicated
                 ? "batches are spooled as well until one is back"
                 : "accepted all the same (storage.standby_policy=warn)");
  else
    log().info("{} a synchronous standby confirms commits again", st.name);
}

/// Replays the spool; true if it is empty afterwards. Under the spool
/// policy, records stay until a standby has them: while the primary runs
/// alone the replay waits for one, and a replay that finds none still
/// writes every record (so all are readable) but keeps them.
bool try_replay(importer_actor* self) {
  auto& st = self->state;
  if (st.spool->empty())
    return true;
  if (st.spool_unreplicated && st.spool_in_pg) {
    auto back = st.writer->standby_has();
    if (!back)
      return false;
    // standby_has() names the primary it asked: a lone primary other than
    // the one that committed the spool (a promotion of a standby that
    // lacked those commits) gets the replay now, so every acknowledged
    // point is readable again; the records stay until a standby has them.
    if (!*back && st.writer->epoch() == st.spool_epoch)
      return false;
    set_alone(self, !*back);
    if (*back && st.writer->epoch() == st.spool_epoch) {
      // The same primary, and a standby has flushed all it wrote: it has
      // every spooled batch. No replay needed.
      auto n = st.spool->records();
      if (auto cerr = st.spool->clear()) {
        log().error("{} cannot clear spool: {}", st.name,
                    config::describe(cerr));
        return false;
      }
      st.probe->spool_bytes->set(0);
      log().info("{} a standby has all {} spooled batches; spool emptied "
                 "without a replay",
                 st.name, n);
      return true;
    }
    // A promotion since: the new primary may lack some; replay them.
  }
  size_t n = 0;
  bool kept = false;
  // Which primary the replayed records went to; two (a promotion mid-pass,
  // past a silent reconnect) means some may be only on the first.
  std::string pass_epoch;
  bool one_primary = true;
  auto err = st.spool->replay([&](const std::string& rec) -> caf::error {
    storage::ingest_batch b;
    if (!storage::decode_batch(rec, b)) {
      log().error("importer={} undecodable spool record skipped", st.name);
      return caf::none;
    }
    // A spooled batch may be in PostgreSQL already (its COMMIT answer was
    // lost, or an earlier replay stopped after it): replay mode stores none
    // of its points twice.
    auto err = st.writer->write(b, storage::ingest_writer::mode::replay);
    set_writable(self, err != storage::errc::unavailable);
    if (!err || err == storage::errc::unreplicated) {
      if (pass_epoch.empty())
        pass_epoch = st.writer->epoch();
      one_primary = one_primary && pass_epoch == st.writer->epoch();
    }
    if (err == storage::errc::unreplicated) {
      st.probe->unreplicated->inc();
      set_alone(self, true);
      kept = kept || st.spool_unreplicated;
      err = caf::none;
    }
    if (err)
      return err;
    ++n;
    st.probe->replayed->inc();
    return caf::none;
  });
  if (err) {
    if (n > 0)
      log().warn("{} spool replay stopped after {} records: {}", st.name, n,
                 config::describe(err));
    return false;
  }
  if (kept) {
    st.spool_in_pg = one_primary;
    st.spool_epoch = pass_epoch;
    return false;
  }
  if (auto cerr = st.spool->clear()) {
    log().error("{} cannot clear spool: {}", st.name, config::describe(cerr));
    return false;
  }
  st.probe->spool_bytes->set(0);
  log().info("{} replayed {} spooled batches into PostgreSQL", st.name, n);
  return true;
}

void arm_replay(importer_actor* self) {
  auto& st = self->state;
  if (st.replay_armed || st.spool->empty())
    return;
  st.replay_armed = true;
  self->delayed_send(self, std::chrono::seconds(1), replay_atom::value);
}

/// Writes one batch to PostgreSQL, or to the spool when PostgreSQL is
/// unreachable (or older spooled batches still wait), or to both when the
/// primary committed it alone under the spool policy.
caf::error write_or_spool(importer_actor* self,
                          const storage::ingest_batch& b) {
  auto& st = self->state;
  // Whether the batch is in PostgreSQL already (committed without a
  // standby) when it goes to the spool.
  bool committed = false;
  // Under the spool policy with the primary alone, the spool waits for a
  // standby (the replay timer asks), and new batches still go to the
  // primary so they can be read at once.
  if ((st.spool_unreplicated && st.alone) || try_replay(self)) {
    // A batch the spool cannot hold must not commit: its 503 would leave it
    // stored, and the device's retry would store it twice.
    if (st.spool_unreplicated && st.alone
        && !st.spool->fits(storage::encode_batch(b).size()))
      return make_actor_error(errc::unavailable,
                              "the primary runs without a standby and the "
                              "spool is full; retry later");
    auto err = st.writer->write(b);
    set_writable(self, err != storage::errc::unavailable);
    if (err == storage::errc::unreplicated) {
      st.probe->unreplicated->inc();
      set_alone(self, true);
      if (!st.spool_unreplicated)
        return caf::none;
      committed = true;
    } else if (!err) {
      set_alone(self, false);
      return caf::none;
    } else if (err != storage::errc::unavailable) {
      return err;
    } else {
      log().warn("{} PostgreSQL unavailable, spooling: {}", st.name,
                 config::describe(err));
    }
  }
  if (st.spool->empty()) {
    st.spool_in_pg = true;
    st.spool_epoch = st.writer->epoch();
  }
  auto err = st.spool->append(storage::encode_batch(b));
  if (!err) {
    st.spool_in_pg = st.spool_in_pg && committed
                     && st.spool_epoch == st.writer->epoch();
    st.probe->spooled->inc();
    st.probe->spool_bytes->set(static_cast<int64_t>(st.spool->size_bytes()));
    arm_replay(self);
    return caf::none;
  }
  log().error("{} cannot spool: {}", st.name, config::describe(err));
  return make_actor_error(errc::unavailable,
                          "cannot store durably right now: "
                            + config::describe(err));
}

void flush(importer_actor* self) {
  auto& st = self->state;
  if (st.parts.empty())
    return;
  // Fault injection for the supervision tests: fail before writing, so the
  // held requests are answered by the exception handler, not acknowledged.
  auto every = st.ctx->ingest.crash_every_flushes;
  if (every > 0 && ++st.flushes % every == 0)
    throw std::runtime_error("injected importer failure "
                             "(ingest.crash_every_flushes)");
  auto parts = std::move(st.parts);
  st.parts.clear();
  auto npoints = st.pending_points;
  st.pending_points = 0;
  st.probe->queued->set(0);
  storage::ingest_batch all;
  all.points.reserve(npoints);
  for (auto& p : parts)
    merge(all, p.batch);
  auto t0 = std::chrono::steady_clock::now();
  auto err = write_or_spool(self, all);
  st.probe->flush_seconds->observe(
    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count());
  st.probe->flushes->inc();
  st.probe->batch_points->observe(static_cast<double>(npoints));
  if (!err) {
    st.probe->points->inc(npoints);
    for (auto& p : parts)
      p.rp.deliver(ok_atom::value);
  } else if (err == storage::errc::query_failed) {
    // Something in the group is unacceptable to PostgreSQL: write each
    // request alone so only the bad one fails.
    st.probe->flush_errors->inc();
    log().warn("{} group commit failed, retrying {} parts alone: {}", st.name,
               parts.size(), config::describe(err));
    for (auto& p : parts) {
      auto perr = write_or_spool(self, p.batch);
      if (perr)
        p.rp.deliver(perr);
      else {
        st.probe->points->inc(p.batch.points.size());
        p.rp.deliver(ok_atom::value);
      }
    }
  } else {
    st.probe->flush_errors->inc();
    for (auto& p : parts)
      p.rp.deliver(err);
  }
  st.ctx->queued_points->fetch_sub(static_cast<int64_t>(npoints));
}

caf::behavior importer(importer_actor* self, context_ptr ctx,
                       std::string url, std::string data_dir, std::string id,
                       size_t spool_max_bytes) {
  auto& st = self->state;
  st.name = "importer-" + id;
  st.ctx = ctx;
  st.spool_unreplicated = ctx->standby_policy == "spool";
  st.writer = std::make_unique<storage::ingest_writer>(
    url, 5, ctx->standby_policy != "none");
  st.spool = std::make_unique<storage::spool>(
    data_dir + "/spool/importer-" + id + ".spool", spool_max_bytes);
  st.probe = std::make_unique<importer_probe>(id);
  st.probe->spool_bytes->set(static_cast<int64_t>(st.spool->size_bytes()));
  if (!st.spool->empty()) {
    log().info("{} found {} spooled bytes from an earlier run", st.name,
               st.spool->size_bytes());
    arm_replay(self);
  }
  self->set_exit_handler([=](caf::exit_msg& em) {
    // Final flush: whatever is queued gets its answer before we go.
    flush(self);
    self->quit(em.reason);
  });
  // A failure answers every request it holds (not stored, so the devices
  // retry) before the supervisor restarts us: none waits for a timeout.
  self->set_exception_handler(
    [=](caf::scheduled_actor*, std::exception_ptr& eptr) -> caf::error {
      auto& st = self->state;
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(eptr);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      log().error("{} failed: {}; answering {} held requests", st.name, what,
                  st.parts.size());
      for (auto& p : st.parts)
        p.rp.deliver(make_actor_error(errc::unavailable,
                                      "the importer failed; retry"));
      st.parts.clear();
      st.ctx->queued_points->fetch_sub(
        static_cast<int64_t>(st.pending_points));
      st.pending_points = 0;
      st.probe->queued->set(0);
      return make_actor_error(errc::unavailable, what);
    });
  return {
    [=](import_request& req) -> caf::result<ok_atom> {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      st.pending_points += req.batch.points.size();
      st.probe->queued->set(static_cast<int64_t>(st.pending_points));
      st.parts.push_back({rp, std::move(req.batch)});
      if (st.pending_points >= st.ctx->ingest.max_batch_points) {
        flush(self);
      } else if (!st.flush_armed) {
        st.flush_armed = true;
        // Group commit: with no interval, the flush message goes to the back
        // of the mailbox, so every request already queued joins this flush
        // and those arriving during it form the next one. An interval trades
        // latency for bigger batches.
        auto interval = st.ctx->ingest.flush_interval_ms;
        if (interval <= 0)
          self->send(self, flush_atom::value);
        else
          self->delayed_send(self, std::chrono::milliseconds(interval),
                             flush_atom::value);
      }
      return caf::delegated<ok_atom>{};
    },
    [=](flush_atom) {
      self->state.flush_armed = false;
      flush(self);
    },
    [=](replay_atom) {
      auto& st = self->state;
      st.replay_armed = false;
      if (!try_replay(self))
        arm_replay(self);
    },
  };
}

} // namespace

caf::actor spawn_importer(caf::actor_system& sys, const context_ptr& ctx,
                          const std::string& database_url,
                          const std::string& data_dir, const std::string& id,
                          size_t spool_max_bytes) {
  auto& a = ctx->analysis;
  return runtime::spawn_supervisor(
    sys, "importer-" + id,
    [=](caf::actor_system& sys) {
      return sys.spawn<caf::detached>(importer, ctx, database_url, data_dir,
                                      id, spool_max_bytes);
    },
    runtime::restart_policy{static_cast<size_t>(a.max_restarts),
                            std::chrono::seconds(a.restart_window_s),
                            std::chrono::milliseconds(a.restart_backoff_ms)});
}

} // namespace troupe::actors
