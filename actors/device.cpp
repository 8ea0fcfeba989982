#include "actors/device.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/device_loader.hpp"
#include "actors/errc.hpp"
#include "actors/importer.hpp"
#include "actors/logger.hpp"
#include "actors/roles.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/db_pool.hpp"
#include "runtime/errc.hpp"
#include "runtime/failure_window.hpp"
#include "runtime/metrics.hpp"
#include "storage/crypto.hpp"
#include "storage/errc.hpp"
#include "storage/queries.hpp"

namespace troupe::actors {

namespace {

using runtime::db_call;
using runtime::ok_atom;
using runtime::passivate_atom;
using runtime::stop_atom;
using runtime::tick_atom;

struct waiter {
  caf::typed_response_promise<commands_reply> rp;
  /// The edge's request id, to drop it when the client goes away.
  std::string req_id;
};

/// Long-polls one device may hold at once; the oldest answers (empty)
/// when another arrives.
constexpr size_t max_waiters = 4;

/// How often an upload also refreshes devices.last_seen_ms (lists, the
/// online filter and silence alerts read it there); seen_refresh_ms when
/// that is shorter. The batch mark itself rides on the latest
/// values every commit, so a busy device costs its devices row one update
/// per interval instead of one per upload.
constexpr int64_t upload_seen_interval_ms = 10'000;

/// A cancel to write again: who cancelled, and when (a retry after the
/// command's time to live still cancels it, as it would have then).
struct unsettled_cancel {
  std::string by;
  int64_t at_ms = 0;
};

struct device_state {
  std::string name = "device";
  context_ptr ctx;
  caf::actor region;
  std::string id;
  bool known = false;
  bool passivating = false;
  /// Reset (changed in PostgreSQL): the copy is stale and about to go.
  bool resetting = false;
  int64_t key = 0;
  std::string dev_name;
  std::string tenant;
  std::string secret_hash;
  /// The data shard holding its telemetry, commands and rollups.
  size_t data_shard = 0;
  int64_t batch_hwm = -1;
  int64_t last_seen_ms = -1;
  /// Its own silence window, s; 0: the node's analysis.silence_s.
  int64_t silence_s = 0;
  /// last_seen as PostgreSQL has it (lists read it from there).
  int64_t stored_seen_ms = -1;
  std::map<std::string, latest_value> latest;
  std::vector<command> open; // pending and delivered, oldest first
  std::unordered_map<std::string, int64_t> tokens; // hash -> expires_ms
  std::map<uint64_t, waiter> waiters;
  uint64_t next_waiter = 0;
  /// Command writes (new commands, delivery marks, cancels, expiries) sent
  /// to PostgreSQL and not
  /// yet answered. Reads of command status wait for them (read your
  /// writes), and so does stop, so the next owner loads what they wrote.
  int64_t command_writes = 0;
  /// Failed logins of this device id (auth.max_failed_logins).
  std::unique_ptr<runtime::failure_window> failures;
  std::vector<std::function<void()>> after_writes;
  /// Cancels whose write may not have landed (PostgreSQL did not answer),
  /// by command id. Their commands stay held back from delivery and the
  /// cancel is written again, backing off, until it lands; the actor does
  /// not passivate meanwhile, and a stop waits for them a while.
  std::map<std::string, unsettled_cancel> unsettled;
  bool retry_armed = false;
  /// Seconds until the next retry of the unsettled cancels.
  int64_t retry_delay_s = 0;
  bool stop_requested = false;
  std::chrono::steady_clock::time_point stop_since;
  std::chrono::steady_clock::time_point last_activity;
};

using device_ptr = device_actor::stateful_pointer<device_state>;

/// The device's data shard: its pool, and where its stale-tolerant reads go.
const caf::actor& data_db(device_ptr self) {
  auto& st = self->state;
  return st.ctx->data[st.data_shard].db;
}

const caf::actor& data_reads(device_ptr self) {
  auto& st = self->state;
  return st.ctx->data[st.data_shard].reads;
}

runtime::counter* login_throttled() {
  static auto c = &runtime::metrics().get_counter(
    "troupe_login_throttled_total",
    "Logins refused with 429 (too many failures)",
    "kind=\"device\",scope=\"key\"");
  return c;
}

runtime::counter* login_failed() {
  static auto c = &runtime::metrics().get_counter(
    "troupe_login_failures_total", "Logins refused for wrong credentials",
    "kind=\"device\"");
  return c;
}

/// Commands by what happened to them, and how long they waited for their
/// device: what an operator asks of a fleet ("are commands getting
/// through?"), looked up once.
struct command_probe {
  runtime::counter* sent;
  runtime::counter* delivered;
  runtime::counter* done;
  runtime::counter* failed;
  runtime::counter* expired;
  runtime::counter* cancelled;
  runtime::histogram* delivery_seconds;

  command_probe() {
    auto& r = runtime::metrics();
    auto event = [&](const char* e) {
      return &r.get_counter("troupe_commands_total",
                            "Commands sent, first delivered, finished (done "
                            "or failed), expired or cancelled",
                            std::string{"event=\""} + e + "\"");
    };
    sent = event("sent");
    delivered = event("delivered");
    done = event("done");
    failed = event("failed");
    expired = event("expired");
    cancelled = event("cancelled");
    // A device may be offline for hours: buckets up to a day.
    static const std::vector<double> waits = {0.01, 0.1, 0.5, 1,    5,
                                              30,   60,  300, 1800, 3600,
                                              21600, 86400};
    delivery_seconds = &r.get_histogram(
      "troupe_command_delivery_seconds",
      "From a command's creation to its first delivery", "", waits);
  }
};

command_probe& commands_probe() {
  static command_probe p;
  return p;
}

caf::error unauthorized() {
  return make_actor_error(errc::unauthorized, "invalid or expired token");
}

caf::error not_found(const std::string& id) {
  return make_actor_error(errc::not_found, "device " + id + " not found");
}

/// The in-memory status of a pending command whose cancel is being
/// recorded: neither delivered nor counted as pending meanwhile.
const std::string cancelling = "cancelling";

/// Seconds between writes of a cancel PostgreSQL did not answer: from the
/// first to the last, doubling.
constexpr int64_t cancel_retry_first_s = 2;
constexpr int64_t cancel_retry_last_s = 60;
/// How long a stop waits for unsettled cancels before it gives them up.
constexpr auto stop_grace = std::chrono::seconds(10);

caf::error cannot_cancel(const command& c) {
  return make_actor_error(errc::conflict,
                          "command " + c.id + " is " + c.status
                            + "; only a pending command can be cancelled");
}

/// The open command `id`, or open.end().
std::vector<command>::iterator find_open(device_ptr self,
                                         const std::string& id) {
  auto& open = self->state.open;
  return std::find_if(open.begin(), open.end(),
                      [&](const command& c) { return c.id == id; });
}

command to_command(const storage::command_row& r) {
  command c;
  c.id = r.id;
  c.name = r.name;
  c.args_json = r.args_json;
  c.created_ms = r.created_ms;
  c.expires_ms = r.expires_ms;
  c.status = r.status;
  c.delivered_ms = r.delivered_ms.value_or(-1);
  c.result_json = r.result_json.value_or("");
  c.finished_ms = r.finished_ms.value_or(-1);
  return c;
}

void touch(device_ptr self) {
  self->state.last_activity = std::chrono::steady_clock::now();
}

/// Once told to stop, the actor only finishes its delivery marks; once
/// reset, its copy is stale. A request that still reaches it (in its
/// mailbox already, or sent past the region by the edge, which found it
/// just before the region withdrew it) answers `moved`, and the edge asks
/// the region again, which holds it for the next owner or a fresh load.
caf::error retired(device_ptr self) {
  if (!self->state.stop_requested && !self->state.resetting)
    return caf::none;
  return runtime::make_runtime_error(runtime::errc::moved,
                                     "device " + self->state.id
                                       + " is stopping; retry");
}

/// A request handler as a live device serves it: once retired it answers
/// `moved`; otherwise the request counts as activity.
template <class F, class R, class Req>
auto serving(device_ptr self, F f, R (F::*)(Req&) const) {
  return [self, f](Req& req) -> R {
    if (auto err = retired(self))
      return err;
    touch(self);
    return f(req);
  };
}

template <class F>
auto serving(device_ptr self, F f) {
  return serving(self, std::move(f), &F::operator());
}

/// Checks a device token ("<device id>.<random>") against the loaded hashes.
bool token_ok(device_ptr self, const std::string& token) {
  auto& st = self->state;
  if (!st.known)
    return false;
  auto dot = token.rfind('.');
  if (dot == std::string::npos || token.compare(0, dot, st.id) != 0)
    return false;
  auto hash = storage::crypto::keyed_hash(st.ctx->secret_key,
                                          token.substr(dot + 1));
  auto it = st.tokens.find(hash);
  if (it == st.tokens.end())
    return false;
  if (it->second <= now_ms()) {
    st.tokens.erase(it);
    return false;
  }
  return true;
}

/// A user may see devices of their tenant; admins see all. Others: 404.
bool visible_to(device_ptr self, const caller& who) {
  auto& st = self->state;
  return st.known && sees(who, st.tenant);
}

/// Quits once a stop was asked for and no command write nor unsettled
/// cancel is left.
void maybe_quit(device_ptr self) {
  auto& st = self->state;
  if (st.stop_requested && st.command_writes == 0 && st.unsettled.empty())
    self->quit();
}

/// A command write was answered: once none is left, the reads waiting for
/// them run, and a stop requested meanwhile happens.
void command_written(device_ptr self) {
  auto& st = self->state;
  if (--st.command_writes > 0)
    return;
  auto waiting = std::move(st.after_writes);
  st.after_writes.clear();
  for (auto& f : waiting)
    f();
  maybe_quit(self);
}

/// Whether `who` may `verb` (send, cancel) commands of this device: 404 for
/// a device it cannot see, 403 for a role that does not operate.
caf::error may_command(device_ptr self, const caller& who, const char* verb) {
  if (!visible_to(self, who))
    return not_found(self->state.id);
  if (!may_operate(who))
    return make_actor_error(errc::forbidden, "role " + who.role + " may not "
                                               + verb + " commands");
  return caf::none;
}

/// Moves commands past their time to live to `expired`.
void sweep_expired(device_ptr self) {
  auto& st = self->state;
  auto now = now_ms();
  std::vector<std::string> ids;
  auto& open = st.open;
  open.erase(std::remove_if(open.begin(), open.end(),
                            [&](const command& c) {
                              if (c.expires_ms > now)
                                return false;
                              ids.push_back(c.id);
                              return true;
                            }),
             open.end());
  if (ids.empty())
    return;
  commands_probe().expired->inc(ids.size());
  // A command write: reads of command status wait for it.
  ++st.command_writes;
  db_call<bool>(
    self, data_db(self),
    [ids](storage::connection& c) -> caf::expected<bool> {
      if (auto err = storage::expire_commands(c, ids))
        return err;
      return true;
    },
    [self, n = ids.size()](caf::expected<bool> r) {
      if (!r)
        log().warn("device={} cannot expire {} commands: {}",
                   self->state.id, n, config::describe(r.error()));
      command_written(self);
    });
}

/// Takes the pending commands for delivery: marks them delivered in memory
/// now and in PostgreSQL in the background (delivery is at least once, so a
/// lost mark only means one more delivery).
std::vector<command> take_pending(device_ptr self, bool include_delivered) {
  auto& st = self->state;
  sweep_expired(self);
  std::vector<command> out;
  std::vector<std::string> ids;
  auto now = now_ms();
  for (auto& c : st.open) {
    if (c.status == "pending" || (include_delivered && c.status == "delivered")) {
      if (c.status == "pending") {
        c.status = "delivered";
        c.delivered_ms = now;
        ids.push_back(c.id);
        commands_probe().delivered->inc();
        commands_probe().delivery_seconds->observe(
          static_cast<double>(std::max<int64_t>(0, now - c.created_ms))
          / 1000.0);
      }
      out.push_back(c);
    }
  }
  if (!ids.empty()) {
    ++st.command_writes;
    db_call<bool>(
      self, data_db(self),
      [ids, now](storage::connection& c) -> caf::expected<bool> {
        if (auto err = storage::mark_delivered(c, ids, now))
          return err;
        return true;
      },
      [self](caf::expected<bool> r) {
        if (!r)
          log().warn("device={} cannot mark commands delivered: {}",
                     self->state.id, config::describe(r.error()));
        command_written(self);
      });
  }
  return out;
}

device_view view_of(device_ptr self) {
  auto& st = self->state;
  device_view v;
  v.id = st.id;
  v.name = st.dev_name;
  v.tenant = st.tenant;
  v.last_seen_ms = st.last_seen_ms;
  v.silence_s = st.silence_s;
  v.online = st.last_seen_ms >= 0
             && st.last_seen_ms
                  >= now_ms() - st.ctx->actors.online_window_s * 1000;
  v.latest = st.latest;
  for (auto& [m, _] : st.latest)
    v.metrics.push_back(m);
  v.pending_commands = static_cast<int64_t>(
    std::count_if(st.open.begin(), st.open.end(),
                  [](const command& c) { return c.status == "pending"; }));
  return v;
}

/// How stale devices.last_seen_ms may get while the device keeps logging
/// in or polling: a quarter of the online window (lists and the online
/// filter read it there) or of its silence window (silence alerts do; its
/// own, devices.silence_s, or the node's), whichever is shorter, so neither
/// misreads a device that is still there.
int64_t seen_refresh_ms(device_ptr self) {
  auto& st = self->state;
  auto silence = st.silence_s > 0 ? st.silence_s : st.ctx->analysis.silence_s;
  return std::min(st.ctx->actors.online_window_s, silence) * 1000 / 4;
}

/// A login or a poll: the device is seen now. PostgreSQL hears of it at
/// most every seen_refresh_ms.
void note_seen(device_ptr self) {
  auto& st = self->state;
  st.last_seen_ms = now_ms();
  if (st.last_seen_ms - st.stored_seen_ms < seen_refresh_ms(self))
    return;
  st.stored_seen_ms = st.last_seen_ms;
  db_call<bool>(
    self, data_db(self),
    [id = st.id, t = st.last_seen_ms](storage::connection& c)
      -> caf::expected<bool> {
      if (auto err = storage::touch_device(c, id, t))
        return err;
      return true;
    },
    [self](caf::expected<bool> r) {
      if (!r)
        log().warn("device={} cannot record last_seen: {}", self->state.id,
                   config::describe(r.error()));
    });
}

/// On stop (passivation, handoff, shutdown): a sighting PostgreSQL has not
/// heard of yet (uploads refresh it only every few seconds) is written now,
/// so lists and silence alerts see it. Not awaited: the write is
/// `greatest()`, so it may land after the next owner has loaded the device,
/// and the pools stop only after every region has.
void store_last_seen(device_ptr self) {
  auto& st = self->state;
  if (!st.known || st.last_seen_ms <= st.stored_seen_ms)
    return;
  st.stored_seen_ms = st.last_seen_ms;
  caf::anon_send(
    data_db(self),
    runtime::db_job{[id = st.id, t = st.last_seen_ms](storage::connection& c) {
      auto err = storage::touch_device(c, id, t);
      if (err)
        log().warn("device={} cannot record last_seen on stop: {}", id,
                   config::describe(err));
      return err;
    }});
}

void answer_waiters(device_ptr self, const std::vector<command>& cmds) {
  auto& st = self->state;
  for (auto& [id, w] : st.waiters)
    w.rp.deliver(commands_reply{cmds});
  st.waiters.clear();
}

void arm_cancel_retry(device_ptr self);

/// Whether a write that failed may still have landed: PostgreSQL's answer
/// was lost (the link broke) or late. Other failures stored nothing.
bool outcome_unknown(const caf::error& err) {
  return err == storage::errc::unavailable || err == caf::sec::request_timeout
         || err == caf::sec::request_receiver_down;
}

/// Records that `by` cancelled command `cid` at `at_ms` and hands `k` what
/// the cancel answers: the cancelled command, 404, 409 for one past
/// pending, or the error. When the write's outcome is unknown the command
/// stays held back from delivery (it may be cancelled already), `k` gets
/// 503, and the write is retried while this actor lives (unsettled). A
/// first write that stored nothing releases the command again; a retry
/// that fails in any way keeps it held, as the write before it may have
/// landed.
void write_cancel(device_ptr self, const std::string& cid,
                  const unsettled_cancel& u, const std::string& req_id,
                  bool retry,
                  std::function<void(caf::expected<command>)> k) {
  auto& st = self->state;
  ++st.command_writes;
  db_call<storage::cancel_outcome>(
    self, data_db(self),
    [id = st.id, cid, u](storage::connection& c) {
      return storage::cancel_command(c, id, cid, u.by, u.at_ms);
    },
    [=](caf::expected<storage::cancel_outcome> r) {
      auto& st = self->state;
      auto answer = [&]() -> caf::expected<command> {
        auto it = find_open(self, cid);
        if (!r && (retry || outcome_unknown(r.error()))
            && it != st.open.end()) {
          auto first = st.unsettled.emplace(cid, u).second;
          if (first && !retry)
            log().warn("device={} req={} command={} cancel not stored ({}); "
                       "held back, retried until it lands",
                       st.id, req_id, cid, config::describe(r.error()));
          arm_cancel_retry(self);
          return make_actor_error(
            errc::unavailable,
            "the cancel could not be stored right now (it may have been): "
            "this node holds the command back and writes the cancel again; "
            "retry to learn the outcome");
        }
        if (!r) {
          // Nothing was stored: the command is pending as before.
          if (it != st.open.end() && it->status == cancelling)
            it->status = "pending";
          log().warn("device={} req={} command={} cancel failed: {}", st.id,
                     req_id, cid, config::describe(r.error()));
          return std::move(r.error());
        }
        if (st.unsettled.empty())
          st.retry_delay_s = 0; // the next outage backs off from the start
        if (!r->found)
          return make_actor_error(errc::not_found,
                                  "command " + cid + " not found");
        auto cmd = to_command(r->row);
        if (cmd.status == "delivered" && it != st.open.end())
          it->status = cmd.status; // PostgreSQL knows better
        else if (it != st.open.end())
          st.open.erase(it);
        if (cmd.status != "cancelled")
          return cannot_cancel(cmd);
        if (r->cancelled) {
          commands_probe().cancelled->inc();
          log().info("device={} req={} command={} cancelled by={}", st.id,
                     req_id, cmd.id, u.by);
        }
        return cmd;
      }();
      k(std::move(answer));
      command_written(self);
    });
}

void arm_cancel_retry(device_ptr self) {
  auto& st = self->state;
  if (st.retry_armed || st.unsettled.empty())
    return;
  st.retry_armed = true;
  st.retry_delay_s = st.retry_delay_s == 0
                       ? cancel_retry_first_s
                       : std::min(cancel_retry_last_s, st.retry_delay_s * 2);
  // A stop waiting for them retries at the first pace.
  auto delay = st.stop_requested ? cancel_retry_first_s : st.retry_delay_s;
  self->delayed_send(self, std::chrono::seconds(delay), retry_atom::value);
}

void passivate(device_ptr self) {
  auto& st = self->state;
  if (st.passivating)
    return;
  st.passivating = true;
  caf::anon_send(st.region, passivate_atom::value, st.id, self->address());
}

void schedule_tick(device_ptr self) {
  auto secs = std::max<int64_t>(1, self->state.ctx->actors.passivate_after_s
                                     / 2);
  self->delayed_send(self, std::chrono::seconds(secs), tick_atom::value);
}

void load(device_ptr self, storage::device_row row) {
  auto& st = self->state;
  st.known = true;
  st.key = row.key;
  st.dev_name = row.name;
  st.tenant = row.tenant;
  st.secret_hash = row.secret_hash;
  st.data_shard = static_cast<size_t>(row.data_shard);
  st.batch_hwm = row.batch_hwm.value_or(-1);
  st.last_seen_ms = row.last_seen_ms.value_or(-1);
  st.stored_seen_ms = st.last_seen_ms;
  st.silence_s = row.silence_s.value_or(0);
  for (auto& l : row.latest)
    st.latest[l.metric] = latest_value{l.value, l.ts_ms};
  for (auto& c : row.open_commands)
    st.open.push_back(to_command(c));
  for (auto& [hash, exp] : row.tokens)
    st.tokens[hash] = exp;
}

/// Answers a command list from PostgreSQL, expiring overdue commands in
/// the same job so the list shows them; what this actor knows of its open
/// commands (a delivery whose mark failed) overrides older rows.
void list_commands_now(device_ptr self, const list_commands& req,
                       caf::typed_response_promise<command_page> rp) {
  auto& st = self->state;
  std::vector<std::string> overdue;
  auto now = now_ms();
  for (auto& c : st.open)
    if (c.expires_ms <= now)
      overdue.push_back(c.id);
  st.open.erase(std::remove_if(st.open.begin(), st.open.end(),
                               [&](const command& c) {
                                 return c.expires_ms <= now;
                               }),
                st.open.end());
  if (!overdue.empty())
    commands_probe().expired->inc(overdue.size());
  db_call<std::vector<storage::command_row>>(
    self, data_db(self),
    [=, id = st.id](storage::connection& c)
      -> caf::expected<std::vector<storage::command_row>> {
      if (auto err = storage::expire_commands(c, overdue))
        return err;
      return storage::list_commands(c, id, req.status, req.after_seq,
                                    static_cast<size_t>(req.limit + 1));
    },
    [=](caf::expected<std::vector<storage::command_row>> r) mutable {
      if (!r) {
        rp.deliver(r.error());
        return;
      }
      auto& st = self->state;
      command_page page;
      for (size_t i = 0; i < r->size(); ++i) {
        if (static_cast<int64_t>(i) == req.limit) {
          page.next_seq = (*r)[i - 1].seq;
          break;
        }
        auto c = to_command((*r)[i]);
        if (c.status == "pending")
          for (auto& mine : st.open)
            if (mine.id == c.id && mine.status == "delivered") {
              c.status = mine.status;
              c.delivered_ms = mine.delivered_ms;
            }
        if (req.status.empty() || c.status == req.status)
          page.items.push_back(std::move(c));
      }
      rp.deliver(std::move(page));
    });
}

} // namespace

device_actor::behavior_type device(device_ptr self, context_ptr ctx,
                                  caf::actor region,
                     std::string id) {
  auto& st = self->state;
  st.ctx = ctx;
  st.region = region;
  st.id = id;
  st.name = "device:" + id;
  st.failures = std::make_unique<runtime::failure_window>(
    ctx->auth.max_failed_logins,
    std::chrono::seconds(ctx->auth.failed_login_window_s));
  touch(self);
  // Load before serving anything: the awaited reply is handled first.
  // The loader batches the loads of many devices starting at once.
  self
    ->request(ctx->device_loader, std::chrono::seconds(30), load_atom::value,
              id)
    .await(
      [self](loaded_device& loaded) {
        if (!loaded.row) {
          passivate(self);
          return;
        }
        load(self, std::move(*loaded.row));
        schedule_tick(self);
      },
      [self](caf::error& err) {
        log().warn("device={} load failed: {}", self->state.id,
                   config::describe(err));
        // Queued requests bounce (request_receiver_down -> 503); the next
        // message for this id spawns a fresh actor that loads again.
        self->quit(err);
      });
  return {
    // -- device side --------------------------------------------------------
    serving(self, [=](device_login& req) -> caf::result<device_login_reply> {
      auto& st = self->state;
      auto now = std::chrono::steady_clock::now();
      if (auto wait = st.failures->blocked_for(now); wait.count() > 0) {
        login_throttled()->inc();
        log().warn("device={} req={} login throttled", st.id, req.req_id);
        return make_throttled_error("too many failed logins for this "
                                    "device; try again later",
                                    runtime::retry_after_s(wait));
      }
      if (!st.known
          || !storage::crypto::equal_constant_time(
            storage::crypto::keyed_hash(st.ctx->secret_key, req.secret),
            st.secret_hash)) {
        st.failures->fail(now);
        login_failed()->inc();
        return make_actor_error(errc::unauthorized,
                                "invalid device id or secret");
      }
      st.failures->clear();
      auto random = storage::crypto::random_token(32);
      auto token = st.id + "." + random;
      auto hash = storage::crypto::keyed_hash(st.ctx->secret_key, random);
      auto ttl = st.ctx->actors.device_token_ttl_s;
      auto expires = now_ms() + ttl * 1000;
      auto rp = self->make_response_promise<device_login_reply>();
      db_call<bool>(
        self, st.ctx->db,
        [hash, id = st.id, expires](storage::connection& c)
          -> caf::expected<bool> {
          if (auto err = storage::insert_device_token(c, hash, id, expires))
            return err;
          return true;
        },
        [=](caf::expected<bool> r) mutable {
          auto& st = self->state;
          if (!r) {
            rp.deliver(r.error());
            return;
          }
          st.tokens[hash] = expires;
          note_seen(self);
          // At-least-once: delivered commands without a result come again.
          rp.deliver(device_login_reply{token, ttl, take_pending(self, true)});
          log().debug("device={} req={} login", st.id, req.req_id);
        });
      return rp;
    }),
    serving(self, [=](telemetry& req) -> caf::result<telemetry_reply> {
      auto& st = self->state;
      if (!token_ok(self, req.token))
        return unauthorized();
      if (req.batch_id >= 0 && req.batch_id <= st.batch_hwm)
        return telemetry_reply{0, true, {}};
      auto n = static_cast<int64_t>(req.points.size());
      auto& queued = *st.ctx->queued_points;
      if (queued.fetch_add(n) + n
          > static_cast<int64_t>(st.ctx->ingest.max_queued_points)) {
        queued.fetch_sub(n);
        return make_actor_error(errc::too_many_requests,
                                "ingest queue is full");
      }
      auto now = now_ms();
      import_request imp;
      imp.batch.points.reserve(req.points.size());
      for (auto& p : req.points)
        imp.batch.points.push_back({st.key, p.metric, p.ts_ms, p.value});
      auto seen_due = now - st.stored_seen_ms
                      >= std::min(upload_seen_interval_ms,
                                  seen_refresh_ms(self));
      imp.batch.marks.push_back({st.key, req.batch_id, seen_due ? now : -1});
      auto& importers = st.ctx->data[st.data_shard].importers;
      auto& importer = importers[static_cast<size_t>(st.key)
                                 % importers.size()];
      auto rp = self->make_response_promise<telemetry_reply>();
      // Awaited: the next batch of this device waits for this commit, so
      // the batch-id mark only ever moves past committed batches. No
      // deadline: an importer answers every request it takes, also when it
      // fails or is killed (~importer_state), CAF bounces those still in its
      // mailbox, and its PostgreSQL links give up within about 30 s; the
      // edge's own deadline answers the client meanwhile.
      self->request(importer, caf::infinite, std::move(imp))
        .await(
          [=](ok_atom) mutable {
            auto& st = self->state;
            if (req.batch_id >= 0)
              st.batch_hwm = std::max(st.batch_hwm, req.batch_id);
            st.last_seen_ms = std::max(st.last_seen_ms, now);
            // The commit stored it with the points.
            if (seen_due)
              st.stored_seen_ms = std::max(st.stored_seen_ms, now);
            for (auto& p : req.points) {
              auto& l = st.latest[p.metric];
              if (p.ts_ms >= l.ts_ms)
                l = latest_value{p.value, p.ts_ms};
            }
            rp.deliver(telemetry_reply{n, false, take_pending(self, false)});
          },
          [=](caf::error& err) mutable {
            log().warn("device={} req={} import failed: {}", self->state.id,
                       req.req_id, config::describe(err));
            // Bounced unread (the importer had stopped): it never counted
            // these points out of the queue, so we do.
            if (err == caf::sec::request_receiver_down)
              self->state.ctx->queued_points->fetch_sub(n);
            rp.deliver(err);
          });
      return rp;
    }),
    serving(self, [=](poll_commands& req) -> caf::result<commands_reply> {
      auto& st = self->state;
      if (!token_ok(self, req.token))
        return unauthorized();
      note_seen(self);
      auto cmds = take_pending(self, false);
      if (!cmds.empty() || req.wait_ms <= 0)
        return commands_reply{std::move(cmds)};
      auto wid = st.next_waiter++;
      auto rp = self->make_response_promise<commands_reply>();
      if (st.waiters.size() >= max_waiters) {
        st.waiters.begin()->second.rp.deliver(commands_reply{});
        st.waiters.erase(st.waiters.begin());
      }
      st.waiters.emplace(wid, waiter{rp, req.req_id});
      self->delayed_send(self, std::chrono::milliseconds(req.wait_ms),
                         timeout_atom::value, wid);
      return rp;
    }),
    [=](cancel_poll& req) {
      auto& st = self->state;
      for (auto it = st.waiters.begin(); it != st.waiters.end(); ++it) {
        if (it->second.req_id == req.req_id) {
          it->second.rp.deliver(commands_reply{});
          st.waiters.erase(it);
          return;
        }
      }
    },
    [=](timeout_atom, uint64_t wid) {
      auto& st = self->state;
      auto it = st.waiters.find(wid);
      if (it == st.waiters.end())
        return;
      it->second.rp.deliver(commands_reply{});
      st.waiters.erase(it);
    },
    serving(self, [=](command_result& req) -> caf::result<done> {
      auto& st = self->state;
      if (!token_ok(self, req.token))
        return unauthorized();
      auto rp = self->make_response_promise<done>();
      auto now = now_ms();
      db_call<bool>(
        self, data_db(self),
        [req, now, id = st.id](storage::connection& c) {
          return storage::finish_command(c, id, req.command_id, req.status,
                                         req.result_json, now);
        },
        [=](caf::expected<bool> r) mutable {
          auto& st = self->state;
          if (!r) {
            rp.deliver(r.error());
            return;
          }
          if (!*r) {
            rp.deliver(make_actor_error(errc::not_found,
                                        "command " + req.command_id
                                          + " not found or already "
                                            "finished"));
            return;
          }
          st.open.erase(std::remove_if(st.open.begin(), st.open.end(),
                                       [&](const command& c) {
                                         return c.id == req.command_id;
                                       }),
                        st.open.end());
          (req.status == "done" ? commands_probe().done
                                : commands_probe().failed)
            ->inc();
          rp.deliver(done{});
        });
      return rp;
    }),
    // -- user side ----------------------------------------------------------
    serving(self, [=](get_device& req) -> caf::result<device_view> {
      if (!visible_to(self, req.who))
        return not_found(self->state.id);
      sweep_expired(self);
      return view_of(self);
    }),
    serving(self, [=](post_command& req) -> caf::result<command> {
      auto& st = self->state;
      if (auto err = may_command(self, req.who, "send"))
        return err;
      storage::command_row row;
      row.id = storage::crypto::random_token(16);
      row.device_id = st.id;
      row.name = req.name;
      row.args_json = req.args_json;
      row.created_ms = now_ms();
      auto ttl = req.ttl_s > 0 ? req.ttl_s : st.ctx->actors.command_ttl_s;
      row.expires_ms = row.created_ms + ttl * 1000;
      auto rp = self->make_response_promise<command>();
      // A command write too: a stop (an admin change resets the device)
      // waits for its answer instead of dropping the caller's.
      ++st.command_writes;
      db_call<storage::command_row>(
        self, data_db(self),
        [row](storage::connection& c) { return storage::insert_command(c, row); },
        [=](caf::expected<storage::command_row> r) mutable {
          auto& st = self->state;
          if (!r) {
            rp.deliver(r.error());
            command_written(self);
            return;
          }
          auto cmd = to_command(*r);
          st.open.push_back(cmd);
          commands_probe().sent->inc();
          log().info("device={} req={} command={} name={} by={}", st.id,
                     req.who.req_id, cmd.id, cmd.name, req.who.username);
          rp.deliver(cmd);
          // A device waiting in a long-poll gets it at once.
          if (!st.waiters.empty())
            answer_waiters(self, take_pending(self, false));
          command_written(self);
        });
      return rp;
    }),
    serving(self, [=](cancel_command& req) -> caf::result<command> {
      auto& st = self->state;
      if (auto err = may_command(self, req.who, "cancel"))
        return err;
      sweep_expired(self); // an expired command is expired, not cancelled
      auto held = find_open(self, req.command_id);
      if (held != st.open.end() && held->status == "delivered")
        return cannot_cancel(*held);
      // Held back from delivery from now on: also when PostgreSQL's answer
      // is lost (the update may still commit; the write is then retried
      // until it lands).
      if (held != st.open.end())
        held->status = cancelling;
      auto rp = self->make_response_promise<command>();
      write_cancel(self, req.command_id, {req.who.username, now_ms()},
                   req.who.req_id, false,
                   [rp](caf::expected<command> r) mutable {
                     if (r)
                       rp.deliver(std::move(*r));
                     else
                       rp.deliver(std::move(r.error()));
                   });
      return rp;
    }),
    serving(self, [=](list_commands& req) -> caf::result<command_page> {
      auto& st = self->state;
      if (!visible_to(self, req.who))
        return not_found(st.id);
      auto rp = self->make_response_promise<command_page>();
      // A command handed to the device is `delivered` in every later read:
      // query once our delivery marks are in PostgreSQL.
      auto run = [=]() mutable {
        // The writes landed as the actor stops: the next owner answers.
        if (auto err = retired(self)) {
          rp.deliver(std::move(err));
          return;
        }
        list_commands_now(self, req, rp);
      };
      if (st.command_writes > 0)
        st.after_writes.emplace_back(std::move(run));
      else
        run();
      return rp;
    }),
    serving(self, [=](history& req) -> caf::result<history_reply> {
      auto& st = self->state;
      if (!visible_to(self, req.who))
        return not_found(st.id);
      storage::history_query q;
      q.device_key = st.key;
      q.metric = req.metric;
      q.from_ms = req.from_ms;
      q.to_ms = req.to_ms;
      q.limit = static_cast<size_t>(req.limit);
      q.step_ms = req.step_ms;
      auto rp = self->make_response_promise<history_reply>();
      if (q.step_ms > 0) {
        db_call<std::vector<storage::history_bucket>>(
          self, data_reads(self),
          [q](storage::connection& c) { return storage::bucket_history(c, q); },
          [=](caf::expected<std::vector<storage::history_bucket>> r) mutable {
            if (!r) {
              rp.deliver(r.error());
              return;
            }
            history_reply out;
            out.metric = q.metric;
            out.bucketed = true;
            for (auto& b : *r)
              out.buckets.push_back({static_cast<double>(b.start_ms),
                                     static_cast<double>(b.count), b.min,
                                     b.max, b.avg});
            rp.deliver(std::move(out));
          });
      } else {
        db_call<std::vector<storage::history_point>>(
          self, data_reads(self),
          [q](storage::connection& c) { return storage::raw_history(c, q); },
          [=](caf::expected<std::vector<storage::history_point>> r) mutable {
            if (!r) {
              rp.deliver(r.error());
              return;
            }
            history_reply out;
            out.metric = q.metric;
            out.points.reserve(r->size());
            for (auto& p : *r)
              out.points.emplace_back(p.ts_ms, p.value);
            rp.deliver(std::move(out));
          });
      }
      return rp;
    }),
    serving(self, [=](get_analysis& req) -> caf::result<analysis_reply> {
      auto& st = self->state;
      if (!visible_to(self, req.who))
        return not_found(st.id);
      auto rp = self->make_response_promise<analysis_reply>();
      db_call<std::vector<storage::rollup_row>>(
        self, data_reads(self),
        [key = st.key, req](storage::connection& c) {
          return storage::device_rollups(c, key, req.from_ms, req.to_ms);
        },
        [=](caf::expected<std::vector<storage::rollup_row>> r) mutable {
          if (!r) {
            rp.deliver(r.error());
            return;
          }
          analysis_reply out;
          out.device = self->state.id;
          // Rows come ordered by metric, then hour.
          for (auto& x : *r) {
            if (out.metrics.empty() || out.metrics.back().metric != x.metric)
              out.metrics.push_back(metric_analysis{x.metric, {}, 0});
            auto& m = out.metrics.back();
            m.rollups.push_back(
              rollup{x.hour_ms, x.count, x.min, x.max, x.avg, x.anomaly});
            if (x.anomaly)
              ++m.anomalies;
          }
          rp.deliver(std::move(out));
        });
      return rp;
    }),
    // -- lifecycle ----------------------------------------------------------
    [=](reset_atom) -> done {
      // The device changed in PostgreSQL (secret rotated, deleted): drop
      // this copy; the next message loads a fresh one.
      answer_waiters(self, {});
      self->state.known = false;
      self->state.resetting = true;
      passivate(self);
      return done{};
    },
    [=](retry_atom) {
      auto& st = self->state;
      st.retry_armed = false;
      if (st.stop_requested
          && std::chrono::steady_clock::now() - st.stop_since >= stop_grace) {
        // The next owner loads the command as PostgreSQL has it.
        for (auto& [cid, u] : st.unsettled)
          log().error("device={} command={} stopping without its cancel by "
                      "{} stored: PostgreSQL still does not answer; the "
                      "command may be delivered",
                      st.id, cid, u.by);
        st.unsettled.clear();
        maybe_quit(self);
        return;
      }
      // Each is unsettled again if this write does not land either.
      auto again = std::move(st.unsettled);
      st.unsettled.clear();
      for (auto& [cid, u] : again)
        write_cancel(self, cid, u, "retry", true,
                     [](caf::expected<command>) {});
    },
    [=](tick_atom) {
      auto& st = self->state;
      auto idle = std::chrono::steady_clock::now() - st.last_activity;
      if (st.waiters.empty() && st.unsettled.empty()
          && idle >= std::chrono::seconds(st.ctx->actors.passivate_after_s)) {
        passivate(self);
        return;
      }
      schedule_tick(self);
    },
    [=](runtime::drain_atom) {
      // The edge is stopping: waiting long-polls answer now (empty).
      answer_waiters(self, {});
    },
    [=](stop_atom) {
      auto& st = self->state;
      answer_waiters(self, {});
      store_last_seen(self);
      // Command writes and unsettled cancels land first, so the next owner
      // loads them.
      st.stop_requested = true;
      st.stop_since = std::chrono::steady_clock::now();
      if (!st.unsettled.empty()) {
        st.retry_armed = true; // now, not after the backoff
        self->send(self, retry_atom::value);
      }
      maybe_quit(self);
    },
  };
}

device_actor spawn_device(caf::actor_system& sys, const context_ptr& ctx,
                        const caf::actor& region, const std::string& id) {
  return sys.spawn(device, ctx, region, id);
}

} // namespace troupe::actors
