#include "actors/analysis.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include <caf/all.hpp>

#include "actors/context.hpp"
#include "actors/logger.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/metrics.hpp"
#include "storage/errc.hpp"
#include "storage/pg.hpp"
#include "storage/queries.hpp"

namespace troupe::actors {

// -- pure logic ---------------------------------------------------------------------

bool valid_op(const std::string& op) {
  return op == ">" || op == ">=" || op == "<" || op == "<=" || op == "=="
         || op == "!=";
}

bool compare(const std::string& op, double x, double threshold) {
  if (op == ">")
    return x > threshold;
  if (op == ">=")
    return x >= threshold;
  if (op == "<")
    return x < threshold;
  if (op == "<=")
    return x <= threshold;
  if (op == "==")
    return x == threshold;
  if (op == "!=")
    return x != threshold;
  return false;
}

bool rule_breached(const std::string& op, double threshold, int64_t for_s,
                   double latest, const window_stats& w) {
  if (!compare(op, latest, threshold))
    return false;
  if (for_s <= 0)
    return true;
  if (w.count <= 0)
    return false;
  // Every point breaches iff the extreme one does.
  if (op == ">" || op == ">=")
    return compare(op, w.min, threshold);
  if (op == "<" || op == "<=")
    return compare(op, w.max, threshold);
  if (op == "==")
    return w.min == threshold && w.max == threshold;
  if (op == "!=")
    return w.equal == 0;
  return false;
}

bool is_anomaly(double avg, int64_t prior_n, double prior_mean,
                double prior_sd, double z) {
  if (prior_n < 3 || !std::isfinite(avg) || !std::isfinite(prior_mean)
      || !std::isfinite(prior_sd))
    return false;
  auto dev = std::fabs(avg - prior_mean);
  if (prior_sd <= 0) {
    // A flat history: any change beyond rounding noise stands out.
    return dev > 1e-9 * std::max(1.0, std::fabs(prior_mean));
  }
  return dev > z * prior_sd;
}

bool quarantine::fail(const std::string& unit) {
  if (units_.count(unit) > 0)
    return false;
  if (++failures_[unit] < max_failures_)
    return false;
  failures_.erase(unit);
  units_.insert(unit);
  return true;
}

// -- workers ------------------------------------------------------------------------

namespace {

using runtime::stop_atom;
using runtime::tick_atom;
using restart_atom = caf::atom_constant<caf::atom("restart")>;

/// Asks a worker for one pass, skipping the quarantined inputs.
struct run_pass {
  std::vector<std::string> quarantined;
  int64_t now_ms = 0;
  /// The shards this node owns; all_shards: every device (a single node).
  bool all_shards = true;
  std::vector<int32_t> shard_list;

  storage::shard_filter shards() const {
    if (all_shards)
      return std::nullopt;
    return shard_list;
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_pass& x) {
  return f(caf::meta::type_name("troupe.run_pass"), x.quarantined, x.now_ms,
           x.all_shards, x.shard_list);
}

/// What a pass did: rows or pairs processed, alerts opened, and the inputs
/// that failed (each a device key or a rule id).
struct pass_report {
  int64_t processed = 0;
  int64_t opened = 0;
  std::vector<std::string> failed;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, pass_report& x) {
  return f(caf::meta::type_name("troupe.pass_report"), x.processed, x.opened,
           x.failed);
}

const std::vector<std::string>& pass_names() {
  static const std::vector<std::string> names = {"rollups", "rules",
                                                 "anomaly", "silence"};
  return names;
}

// Rows per statement: keeps each transaction short (importers never wait
// for it: hour marks have no unique key, see migration 5).
constexpr size_t chunk_rows = 2000;
// Chunks per pass: a backlog is worked off over several passes.
constexpr int max_chunks = 50;

/// Set-based work failed for a reason other than connectivity: redo it
/// input by input to find the poison ones.
bool per_unit_retry(const caf::error& err) {
  return err == storage::errc::query_failed;
}

std::vector<int64_t> keys_of(const std::vector<std::string>& units) {
  std::vector<int64_t> out;
  for (auto& u : units) {
    char* end = nullptr;
    auto k = std::strtoll(u.c_str(), &end, 10);
    if (end && *end == '\0')
      out.push_back(k);
  }
  return out;
}

std::string fmt(double x) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%g", x);
  return buf;
}

// -- passes (blocking; run on a worker's own connection) --

caf::expected<pass_report> rollups_pass(storage::connection& c,
                                        const run_pass& req) {
  auto skip = keys_of(req.quarantined);
  pass_report rep;
  auto drain = [&](std::optional<int64_t> only) -> caf::error {
    for (int i = 0; i < max_chunks; ++i) {
      auto r = storage::merge_rollup_deltas(c, skip, only, chunk_rows, req.shards());
      if (!r)
        return std::move(r.error());
      rep.processed += r->written;
      if (r->taken < static_cast<int64_t>(chunk_rows))
        break;
    }
    return caf::none;
  };
  auto err = drain(std::nullopt);
  if (!err)
    return rep;
  if (!per_unit_retry(err))
    return err;
  log().warn("analysis pass=rollups set-based run failed, retrying per "
             "device: {}",
             config::describe(err));
  auto keys = storage::delta_device_keys(c, skip, req.shards());
  if (!keys)
    return std::move(keys.error());
  for (auto k : *keys) {
    if (auto e = drain(k)) {
      if (!per_unit_retry(e))
        return e;
      log().warn("analysis pass=rollups device_key={} failed: {}", k,
                 config::describe(e));
      rep.failed.push_back(std::to_string(k));
    }
  }
  return rep;
}

caf::expected<pass_report> anomaly_pass(storage::connection& c,
                                        const run_pass& req, double z) {
  auto skip = keys_of(req.quarantined);
  pass_report rep;
  std::set<int64_t> touched;
  auto check = [&](std::optional<int64_t> only) -> caf::error {
    for (int i = 0; i < max_chunks; ++i) {
      auto cs = storage::unchecked_rollups(c, skip, only, chunk_rows,
                                           req.shards());
      if (!cs)
        return std::move(cs.error());
      std::vector<bool> flags;
      flags.reserve(cs->size());
      for (auto& x : *cs) {
        flags.push_back(
          is_anomaly(x.avg, x.prior_n, x.prior_mean, x.prior_sd, z));
        touched.insert(x.device_key);
      }
      if (auto err = storage::set_anomaly_flags(c, *cs, flags))
        return err;
      rep.processed += static_cast<int64_t>(cs->size());
      if (cs->size() < chunk_rows)
        break;
    }
    return caf::none;
  };
  if (auto err = check(std::nullopt)) {
    if (!per_unit_retry(err))
      return err;
    log().warn("analysis pass=anomaly set-based run failed, retrying per "
               "device: {}",
               config::describe(err));
    auto keys = storage::unchecked_device_keys(c, skip, req.shards());
    if (!keys)
      return std::move(keys.error());
    for (auto k : *keys) {
      if (auto e = check(k)) {
        if (!per_unit_retry(e))
          return e;
        log().warn("analysis pass=anomaly device_key={} failed: {}", k,
                   config::describe(e));
        rep.failed.push_back(std::to_string(k));
        touched.erase(k);
      }
    }
  }
  auto opened = storage::sync_anomaly_alerts(
    c, std::vector<int64_t>{touched.begin(), touched.end()}, req.now_ms);
  if (!opened)
    return std::move(opened.error());
  rep.opened = *opened;
  return rep;
}

caf::expected<pass_report> rules_pass(storage::connection& c,
                                      const run_pass& req) {
  pass_report rep;
  auto ids = storage::rule_ids(c, req.quarantined);
  if (!ids)
    return std::move(ids.error());
  std::vector<storage::rule_candidate> cands;
  auto all = storage::rule_candidates(c, req.quarantined, std::nullopt,
                                      req.now_ms, req.shards());
  if (all) {
    cands = std::move(*all);
  } else if (!per_unit_retry(all.error())) {
    return std::move(all.error());
  } else {
    log().warn("analysis pass=rules set-based run failed, retrying per "
               "rule: {}",
               config::describe(all.error()));
    for (auto& id : *ids) {
      auto one = storage::rule_candidates(c, {}, id, req.now_ms,
                                          req.shards());
      if (!one) {
        if (!per_unit_retry(one.error()))
          return std::move(one.error());
        log().warn("analysis pass=rules rule={} failed: {}", id,
                   config::describe(one.error()));
        rep.failed.push_back(id);
        continue;
      }
      cands.insert(cands.end(), one->begin(), one->end());
    }
  }
  std::vector<std::pair<std::string, std::string>> breaching;
  std::vector<storage::new_alert> alerts;
  for (auto& x : cands) {
    window_stats w{x.window_count, x.window_min, x.window_max,
                   x.window_equal};
    ++rep.processed;
    if (!rule_breached(x.rule.op, x.rule.value, x.rule.for_s, x.latest, w))
      continue;
    breaching.emplace_back(x.rule.id, x.device_id);
    auto msg = x.rule.metric + " = " + fmt(x.latest) + " " + x.rule.op + " "
               + fmt(x.rule.value);
    if (x.rule.for_s > 0)
      msg += " for " + std::to_string(x.rule.for_s) + " s";
    alerts.push_back({x.device_tenant, x.device_id, "rule", x.rule.id,
                      x.rule.metric, msg, x.latest});
  }
  auto opened = storage::open_alerts(c, alerts, req.now_ms);
  if (!opened)
    return std::move(opened.error());
  rep.opened = *opened;
  // Close what no longer breaches, for the rules evaluated in full.
  std::vector<std::string> evaluated;
  for (auto& id : *ids)
    if (std::find(rep.failed.begin(), rep.failed.end(), id)
        == rep.failed.end())
      evaluated.push_back(id);
  if (auto closed = storage::close_rule_alerts(c, evaluated, breaching,
                                               req.now_ms, req.shards());
      !closed)
    return std::move(closed.error());
  return rep;
}

caf::expected<pass_report> silence_pass(storage::connection& c,
                                        const run_pass& req,
                                        int64_t silence_s) {
  auto r = storage::sync_silence_alerts(c, silence_s, req.now_ms,
                                        req.shards());
  if (!r)
    return std::move(r.error());
  pass_report rep;
  rep.opened = r->first;
  rep.processed = r->first + r->second;
  return rep;
}

struct worker_state {
  std::string name = "analysis-worker";
  std::unique_ptr<storage::connection> conn;
  /// The catalog, for a data shard's rules pass (null elsewhere).
  std::unique_ptr<storage::connection> catalog;
};

/// A data shard's rules are the catalog's: copied before each rules pass.
caf::error copy_rules(storage::connection& catalog, storage::connection& c,
                      int64_t now_ms) {
  auto rules = storage::all_rules(catalog);
  if (!rules)
    return std::move(rules.error());
  auto added = storage::sync_rules(c, *rules, now_ms);
  return added ? caf::none : std::move(added.error());
}

using worker_actor = caf::stateful_actor<worker_state>;

/// One pass's worker: detached (its queries block its own thread), one
/// connection, one pass at a time. It may throw; the supervisor restarts it.
caf::behavior worker(worker_actor* self, std::string pass,
                     config::analysis_config cfg, std::string url,
                     std::string catalog_url, int64_t connect_timeout_s) {
  self->state.name = "analysis-worker:" + pass;
  self->state.conn = std::make_unique<storage::connection>(url,
                                                           connect_timeout_s);
  if (pass == "rules" && !catalog_url.empty())
    self->state.catalog = std::make_unique<storage::connection>(
      catalog_url, connect_timeout_s);
  return {
    [=](run_pass& req) -> caf::result<pass_report> {
      auto& c = *self->state.conn;
      // A pass never holds a connection for ever (the supervisor's request
      // timeout is the second line).
      if (auto r = c.exec("SET statement_timeout = '300s'"); !r)
        return std::move(r.error());
      if (self->state.catalog)
        if (auto err = copy_rules(*self->state.catalog, c, req.now_ms))
          return err;
      auto z = static_cast<double>(cfg.anomaly_z_tenths) / 10.0;
      auto rep = pass == "rollups"   ? rollups_pass(c, req)
                 : pass == "anomaly" ? anomaly_pass(c, req, z)
                 : pass == "rules"   ? rules_pass(c, req)
                                     : silence_pass(c, req, cfg.silence_s);
      if (!rep)
        return std::move(rep.error());
      return std::move(*rep);
    },
  };
}

// -- supervisor ---------------------------------------------------------------------

/// A supervised worker and what outlives it.
struct slot {
  std::string pass;
  caf::actor worker;
  bool busy = false;
  restart_policy policy;
  quarantine poisoned;
  runtime::counter* runs = nullptr;
  runtime::counter* failures = nullptr;
  runtime::gauge* last_items = nullptr;
};

struct supervisor_state {
  std::string name = "analysis";
  config::analysis_config cfg;
  owned_shards_fn owned;
  std::string url;
  std::string catalog_url;
  int64_t connect_timeout_s = 5;
  std::map<std::string, std::unique_ptr<slot>> slots;
  bool stopping = false;
  runtime::counter* restarts = nullptr;
  runtime::counter* quarantined = nullptr;
  runtime::counter* opened = nullptr;
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

void start_worker(supervisor_actor* self, slot& s) {
  auto& st = self->state;
  s.worker = self->spawn<caf::detached + caf::monitored>(
    worker, s.pass, st.cfg, st.url, st.catalog_url, st.connect_timeout_s);
  s.busy = false;
}

/// Restarts `s`'s worker after the policy's delay (the worker is gone).
void schedule_restart(supervisor_actor* self, slot& s) {
  auto delay = s.policy.on_crash(restart_policy::clock::now());
  if (s.policy.tripped())
    log().error("analysis pass={} worker restarted too often; it stays down "
                "for {} ms",
                s.pass, delay.count());
  else
    log().warn("analysis pass={} worker restarts in {} ms", s.pass,
               delay.count());
  self->delayed_send(self, delay, restart_atom::value, s.pass);
}

void run(supervisor_actor* self, const std::string& pass);

void finished(supervisor_actor* self, slot& s) {
  s.busy = false;
  // The anomaly pass reads the rollups this pass just wrote.
  if (s.pass == "rollups")
    run(self, "anomaly");
}

void run(supervisor_actor* self, const std::string& pass) {
  auto& st = self->state;
  if (st.stopping)
    return;
  auto& s = *st.slots.at(pass);
  if (!s.worker || s.busy)
    return;
  s.busy = true;
  auto worker = s.worker;
  // A pass may take long on a backlog, but not longer than the worker's
  // statement timeout allows, plus slack.
  auto timeout = std::chrono::minutes(10);
  auto owned = st.owned();
  self->request(worker, timeout,
                run_pass{s.poisoned.units(), now_ms(), !owned,
                         owned ? *owned : std::vector<int32_t>{}})
    .then(
      [=](pass_report& rep) {
        auto& st = self->state;
        auto& s = *st.slots.at(pass);
        s.runs->inc();
        if (rep.opened > 0) {
          st.opened->inc(static_cast<uint64_t>(rep.opened));
          log().info("analysis pass={} opened={} alerts", pass, rep.opened);
        }
        if (!rep.failed.empty())
          s.failures->inc();
        for (auto& u : rep.failed) {
          if (s.poisoned.fail(u)) {
            st.quarantined->inc();
            log().error("analysis pass={} input={} quarantined after {} "
                        "failed passes",
                        pass, u, st.cfg.max_unit_failures);
          }
        }
        s.last_items->set(rep.processed);
        log().debug("analysis pass={} processed={}", pass, rep.processed);
        finished(self, s);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        auto& s = *st.slots.at(pass);
        s.runs->inc();
        s.failures->inc();
        log().warn("analysis pass={} failed: {}", pass,
                   config::describe(err));
        if (err == caf::sec::request_timeout && s.worker == worker) {
          // Hung: replace it now; the old one exits when its call returns.
          self->demonitor(worker);
          self->send_exit(worker, caf::exit_reason::kill);
          s.worker = nullptr;
          schedule_restart(self, s);
        }
        finished(self, s);
      });
}

caf::behavior supervisor(supervisor_actor* self, config::analysis_config cfg,
                         std::string url, int64_t connect_timeout_s,
                         owned_shards_fn owned, std::string catalog_url,
                         size_t data_shard) {
  auto& st = self->state;
  st.cfg = cfg;
  st.owned = std::move(owned);
  st.url = std::move(url);
  st.catalog_url = std::move(catalog_url);
  st.connect_timeout_s = connect_timeout_s;
  // Data shard 0 keeps the labels of a tier without shards.
  auto shard_label = data_shard == 0 ? std::string{}
                                     : "data_shard=\""
                                         + std::to_string(data_shard) + "\"";
  auto with_shard = [&](std::string l) {
    if (shard_label.empty())
      return l;
    return l.empty() ? shard_label : l + "," + shard_label;
  };
  if (data_shard > 0)
    st.name = "analysis-" + std::to_string(data_shard);
  auto& reg = runtime::metrics();
  st.restarts = &reg.get_counter("troupe_analysis_restarts_total",
                                 "Analysis worker restarts",
                                 with_shard(""));
  st.quarantined = &reg.get_counter("troupe_analysis_quarantined_total",
                                    "Analysis inputs quarantined",
                                    with_shard(""));
  st.opened = &reg.get_counter("troupe_alerts_opened_total",
                               "Alerts opened by the analysis",
                               with_shard(""));
  for (auto& p : pass_names()) {
    auto s = std::make_unique<slot>(slot{
      p, nullptr, false,
      restart_policy{static_cast<size_t>(cfg.max_restarts),
                     std::chrono::seconds(cfg.restart_window_s),
                     std::chrono::milliseconds(cfg.restart_backoff_ms)},
      quarantine{cfg.max_unit_failures}, nullptr, nullptr, nullptr});
    auto label = with_shard("pass=\"" + p + "\"");
    s->runs = &reg.get_counter("troupe_analysis_runs_total",
                               "Analysis passes run", label);
    s->failures = &reg.get_counter("troupe_analysis_failures_total",
                                   "Analysis passes failed, in full or for "
                                   "some inputs",
                                   label);
    s->last_items = &reg.get_gauge("troupe_analysis_last_pass_items",
                                   "Items (rows, rule and device pairs, "
                                   "devices) the last pass processed on "
                                   "this node",
                                   label);
    start_worker(self, *s);
    st.slots.emplace(p, std::move(s));
  }
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    for (auto& [pass, s] : st.slots) {
      if (!s->worker || s->worker.address() != dm.source)
        continue;
      s->worker = nullptr;
      s->busy = false;
      if (st.stopping)
        return;
      log().warn("analysis pass={} worker down: {}", pass,
                 config::describe(dm.reason));
      schedule_restart(self, *s);
      return;
    }
  });
  log().info("analysis up data_shard={} interval_ms={} silence_s={} "
             "anomaly_z={}",
             data_shard, cfg.interval_ms, cfg.silence_s,
             static_cast<double>(cfg.anomaly_z_tenths) / 10.0);
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      auto& st = self->state;
      if (st.stopping)
        return;
      self->delayed_send(self, std::chrono::milliseconds(st.cfg.interval_ms),
                         tick_atom::value);
      for (auto p : {"rollups", "rules", "silence"})
        run(self, p);
    },
    [=](restart_atom, const std::string& pass) {
      auto& st = self->state;
      auto it = st.slots.find(pass);
      if (st.stopping || it == st.slots.end() || it->second->worker)
        return;
      st.restarts->inc();
      log().info("analysis pass={} worker restarted", pass);
      start_worker(self, *it->second);
    },
    [=](stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      for (auto& [_, s] : st.slots)
        if (s->worker)
          self->send_exit(s->worker, caf::exit_reason::user_shutdown);
      log().info("analysis stopped");
      self->quit();
    },
  };
}

} // namespace

caf::actor spawn_analysis(caf::actor_system& sys,
                          const config::analysis_config& cfg,
                          const std::string& database_url,
                          int64_t connect_timeout_s, owned_shards_fn owned,
                          const std::string& catalog_url, size_t data_shard) {
  return sys.spawn(supervisor, cfg, database_url, connect_timeout_s,
                   std::move(owned), catalog_url, data_shard);
}

} // namespace troupe::actors
