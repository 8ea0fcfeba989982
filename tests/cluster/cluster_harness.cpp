#include "tests/cluster/cluster_harness.hpp"

#include <cstdlib>

#include <catch2/catch.hpp>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <stdexcept>

#include <unistd.h>

namespace troupe::test::cluster {

namespace {

/// Set when an assertion of the running test case failed. The harness's own
/// listener prints log tails only at the end of a test case, when a
/// test_cluster (a local of the test case) has already stopped its nodes, so
/// the cluster prints them itself on the way out.
std::atomic<bool> assertion_failed{false};

struct failure_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseStarting(const Catch::TestCaseInfo&) override {
    assertion_failed = false;
  }

  bool assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk())
      assertion_failed = true;
    return true;
  }
};

} // namespace

CATCH_REGISTER_LISTENER(failure_listener)

// -- metrics -------------------------------------------------------------------

std::string series(const std::string& name, const std::string& kind) {
  return name + "{kind=\"" + kind + "\"}";
}

// -- the cluster ----------------------------------------------------------------

test_cluster::test_cluster() : db_(std::make_shared<database>()) {
  if (auto n = std::getenv("TROUPE_TEST_DATA_SHARDS"))
    for (int i = 1; i < std::atoi(n); ++i)
      shards_.push_back(std::make_shared<database>());
}

std::vector<std::shared_ptr<database>> test_cluster::data_dbs() const {
  auto out = shards_;
  out.insert(out.begin(), db_);
  return out;
}

test_cluster::~test_cluster() {
  // Fast teardown: the database is dropped anyway.
  for (auto& n : nodes_)
    if (n)
      n->kill();
  if (!assertion_failed && std::uncaught_exceptions() == 0)
    return;
  // Failed: print each node's log tail and keep a copy of every log (the
  // node's temp dir may be removed with it).
  std::error_code ec;
  auto keep = std::filesystem::temp_directory_path()
              / ("troupe-ct-logs-" + std::to_string(::getpid()));
  std::filesystem::create_directories(keep, ec);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    auto& n = *nodes_[i];
    auto copy = keep / (ids_[i] + ".log");
    std::filesystem::copy_file(n.log_path(), copy,
                               std::filesystem::copy_options::overwrite_existing,
                               ec);
    std::cerr << "\n---- cluster node " << ids_[i] << " (port " << n.port()
              << "), full log kept at " << copy.string() << " (tail) ----\n"
              << n.log_tail(60) << "---- end of " << ids_[i]
              << " log tail ----\n";
  }
}

node& test_cluster::add(
  const std::string& id, const std::function<void(int)>& before_start,
  const std::vector<std::pair<std::string, std::string>>& extra) {
  node_options opts;
  opts.http_port = free_tcp_port();
  // Two probes may hand out the same just-released port.
  auto cluster_port = free_tcp_port();
  while (cluster_port == opts.http_port)
    cluster_port = free_tcp_port();
  opts.settings = {
    {"cluster.listen", "127.0.0.1:" + std::to_string(cluster_port)},
    {"cluster.node_id", id},
    {"cluster.heartbeat_ms", std::to_string(heartbeat_ms)},
    {"cluster.lease_ms", std::to_string(lease_ms)},
  };
  std::string shard_urls;
  for (auto& s : shards_)
    shard_urls += (shard_urls.empty() ? "" : ",") + s->url();
  if (!shard_urls.empty())
    opts.settings.emplace_back("storage.shards", shard_urls);
  opts.settings.insert(opts.settings.end(), extra.begin(), extra.end());
  if (before_start)
    before_start(opts.http_port);
  nodes_.push_back(std::make_unique<node>(db_, opts));
  ids_.push_back(id);
  return *nodes_.back();
}

json cluster_view(node& n) {
  auto r = n.get("/api/v1/cluster", n.admin_token());
  if (r.status != 200 || !r.body.is_object())
    n.fail("GET /api/v1/cluster failed", r);
  return r.body;
}

json member_of(const json& view, const std::string& id) {
  if (view.contains("members") && view["members"].is_array())
    for (auto& m : view["members"])
      if (m.is_object() && m.value("id", "") == id)
        return m;
  return nullptr;
}

std::string wait_converged(const std::vector<node*>& nodes,
                           const std::vector<std::string>& ids,
                           std::chrono::milliseconds timeout) {
  std::string problem;
  std::set<std::string> want(ids.begin(), ids.end());
  eventually(
    [&] {
      std::optional<int64_t> version;
      for (auto* n : nodes) {
        json v;
        try {
          v = cluster_view(*n);
        } catch (const std::exception& e) {
          problem = e.what();
          return false;
        }
        auto who = v.value("node", std::string{"?"});
        std::set<std::string> alive;
        int64_t shards = 0;
        for (auto& m : v["members"]) {
          auto state = m.value("state", "");
          if (state == "alive")
            alive.insert(m.value("id", ""));
          if (state == "alive" || state == "draining" || state == "drained")
            shards += m.value("shards", int64_t{0});
        }
        if (alive != want) {
          problem = "node " + who + " sees alive members "
                    + v["members"].dump();
          return false;
        }
        if (shards != shard_count) {
          problem = "node " + who + ": shards sum to "
                    + std::to_string(shards) + ": " + v.dump();
          return false;
        }
        if (v.value("shards", int64_t{0}) != shard_count) {
          problem = "node " + who + ": \"shards\" is not 1024: " + v.dump();
          return false;
        }
        auto ver = v.value("shard_map_version", int64_t{0});
        if (version && *version != ver) {
          problem = "shard_map_version differs: " + std::to_string(*version)
                    + " vs " + std::to_string(ver) + " on " + who;
          return false;
        }
        version = ver;
        if (v.value("fenced", false)) {
          problem = "node " + who + " is fenced";
          return false;
        }
      }
      problem.clear();
      return true;
    },
    timeout, 100ms);
  return problem;
}

std::string newest_map_problems(const database& db) {
  auto top = db.query("SELECT version, array_length(owners, 1) FROM shard_maps "
                      "ORDER BY version DESC LIMIT 1");
  if (top.empty())
    return "no shard_maps row";
  if (top[0][1] != std::to_string(shard_count))
    return "newest map (version " + top[0][0] + ") has " + top[0][1]
           + " shards";
  auto bad = db.query(
    "WITH newest AS (SELECT version, owners FROM shard_maps ORDER BY version "
    "DESC LIMIT 1), "
    "o AS (SELECT n.version, u.owner, u.shard FROM newest n, "
    "unnest(n.owners) WITH ORDINALITY AS u(owner, shard)) "
    "SELECT o.owner, count(*), min(o.shard), coalesce(m.state, '(none)'), "
    "coalesce(((extract(epoch FROM clock_timestamp()) * 1000)::bigint "
    "- m.heartbeat_ms)::text, '') "
    "FROM o LEFT JOIN members m ON m.id = o.owner "
    "WHERE m.id IS NULL OR m.state <> 'alive' OR m.heartbeat_ms < "
    "(extract(epoch FROM clock_timestamp()) * 1000)::bigint - "
    + std::to_string(lease_ms)
    + " GROUP BY o.owner, m.state, m.heartbeat_ms");
  std::string out;
  for (auto& r : bad)
    out += "owner " + r[0] + " of " + r[1] + " shards (first " + r[2]
           + ") is " + r[3] + ", heartbeat " + r[4] + " ms ago; ";
  if (!out.empty())
    out = "newest map version " + top[0][0] + ": " + out;
  return out;
}

// -- the served-shards sampler ----------------------------------------------------

served_sampler::served_sampler() : thread_([this] { run(); }) {
  // nop
}

served_sampler::~served_sampler() {
  stop();
}

void served_sampler::watch(const std::string& id, int port) {
  std::lock_guard<std::mutex> guard{mtx_};
  ports_[id] = port;
}

void served_sampler::unwatch(const std::string& id) {
  std::lock_guard<std::mutex> guard{mtx_};
  ports_.erase(id);
}

void served_sampler::stop() {
  stop_ = true;
  if (thread_.joinable())
    thread_.join();
}

served_sampler::report served_sampler::result() {
  std::lock_guard<std::mutex> guard{mtx_};
  auto r = rep_;
  r.avg_round_ms = r.rounds ? total_ms_ / static_cast<double>(r.rounds) : 0;
  return r;
}

void served_sampler::run() {
  std::map<int, std::unique_ptr<httplib::Client>> clients;
  static const std::vector<std::string> kinds{"device", "session"};
  while (!stop_) {
    std::map<std::string, int> ports;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      ports = ports_;
    }
    if (ports.empty()) {
      std::this_thread::sleep_for(5ms);
      continue;
    }
    auto t0 = clock_type::now();
    std::map<std::string, int64_t> sum;
    std::map<std::string, std::string> detail;
    size_t errors = 0;
    for (auto& [id, port] : ports) {
      auto& cli = clients[port];
      if (!cli) {
        cli = std::make_unique<httplib::Client>("127.0.0.1", port);
        cli->set_keep_alive(true);
        cli->set_tcp_nodelay(true);
        cli->set_connection_timeout(0, 200'000);
        cli->set_read_timeout(2, 0);
      }
      auto res = cli->Get("/metrics");
      if (!res || res->status != 200) {
        ++errors;
        continue;
      }
      for (auto& k : kinds) {
        auto v = metric_value(res->body, series("troupe_shards_served", k));
        auto n = v ? static_cast<int64_t>(*v) : 0;
        sum[k] += n;
        detail[k] += id + "=" + std::to_string(n) + " ";
      }
    }
    double ms
      = std::chrono::duration<double, std::milli>(clock_type::now() - t0)
          .count();
    std::lock_guard<std::mutex> guard{mtx_};
    ++rep_.rounds;
    rep_.errors += errors;
    total_ms_ += ms;
    rep_.max_round_ms = std::max(rep_.max_round_ms, ms);
    if (ms > conclusive_round_ms)
      ++rep_.slow_rounds;
    for (auto& [k, s] : sum) {
      if (s <= shard_count) {
        rep_.max_sum[k] = std::max(rep_.max_sum[k], s);
        continue;
      }
      auto what = k + " shards served sum " + std::to_string(s) + " at "
                  + rfc3339(now_ms()) + " (round " + std::to_string(ms)
                  + " ms): " + detail[k];
      if (ms <= conclusive_round_ms) {
        rep_.max_sum[k] = std::max(rep_.max_sum[k], s);
        if (rep_.violations.size() < 10)
          rep_.violations.push_back(what);
      } else if (rep_.inconclusive.size() < 10) {
        rep_.inconclusive.push_back(what);
      }
    }
  }
}

// -- upload load -------------------------------------------------------------------

std::vector<device_state> setup_devices(node& reg, std::vector<node*> login_via,
                                        size_t count) {
  auto tenant = make_tenant(reg);
  std::vector<std::string> ids;
  for (size_t i = 0; i < count; ++i)
    ids.push_back(unique_id("cl"));
  auto creds = reg.register_devices(reg.admin_token(), ids, tenant);
  std::vector<device_state> out(count);
  std::vector<std::thread> threads;
  std::atomic<size_t> next{0};
  std::mutex err_mtx;
  std::string error;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < count;) {
        out[i].index = i;
        out[i].id = creds[i].id;
        out[i].secret = creds[i].secret;
        try {
          out[i].token = login_via[i % login_via.size()]->device_login(
            creds[i].id, creds[i].secret);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> guard{err_mtx};
          error = e.what();
        }
      }
    });
  for (auto& t : threads)
    t.join();
  if (!error.empty())
    throw std::runtime_error(error);
  return out;
}

upload_load::upload_load(std::vector<node*> targets,
                         std::vector<device_state> devices, int64_t base_ts,
                         size_t threads)
  : targets_(std::move(targets)),
    devices_(std::move(devices)),
    base_ts_(base_ts),
    failing_since_(devices_.size()),
    last_ok_(devices_.size(), clock_type::now()) {
  for (size_t t = 0; t < threads; ++t)
    threads_.emplace_back([this, t, threads] { run(t, threads); });
}

upload_load::~upload_load() {
  stop();
}

void upload_load::set_targets(std::vector<node*> targets) {
  std::lock_guard<std::mutex> guard{targets_mtx_};
  targets_ = std::move(targets);
}

void upload_load::stop() {
  stop_ = true;
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
}

std::vector<acked_batch> upload_load::acked() {
  std::lock_guard<std::mutex> guard{mtx_};
  return acked_;
}

std::map<int, size_t> upload_load::statuses() {
  std::lock_guard<std::mutex> guard{mtx_};
  return statuses_;
}

std::vector<std::string> upload_load::unexpected() {
  std::lock_guard<std::mutex> guard{mtx_};
  return unexpected_;
}

std::pair<double, std::string> upload_load::longest_failure_s() {
  std::lock_guard<std::mutex> guard{mtx_};
  auto best = std::make_pair(longest_s_, longest_dev_);
  auto now = clock_type::now();
  for (size_t i = 0; i < failing_since_.size(); ++i)
    if (failing_since_[i]) {
      double s
        = std::chrono::duration<double>(now - *failing_since_[i]).count();
      if (s > best.first)
        best = {s, devices_[i].id + " (still failing)"};
    }
  return best;
}

std::string upload_load::slowest_answer() {
  std::lock_guard<std::mutex> guard{mtx_};
  return slowest_;
}

std::vector<clock_type::time_point> upload_load::last_success() {
  std::lock_guard<std::mutex> guard{mtx_};
  return last_ok_;
}

void upload_load::note(int status, const std::string& what) {
  std::lock_guard<std::mutex> guard{mtx_};
  ++statuses_[status];
  if (!what.empty() && unexpected_.size() < 20)
    unexpected_.push_back(rfc3339(now_ms()) + " " + what);
}

node* upload_load::pick(std::mt19937& rng) {
  std::lock_guard<std::mutex> guard{targets_mtx_};
  if (targets_.empty())
    return nullptr;
  return targets_[std::uniform_int_distribution<size_t>(
    0, targets_.size() - 1)(rng)];
}

void upload_load::run(size_t first, size_t step) {
  std::mt19937 rng{static_cast<unsigned>(first * 7919 + 17)};
  std::vector<size_t> mine;
  for (size_t i = first; i < devices_.size(); i += step)
    mine.push_back(i);
  if (mine.empty())
    return;
  // A failure stretch starts when the first attempt that did not end in a
  // 202 was sent (so time spent waiting for an answer counts).
  clock_type::time_point sent;
  auto fail_start = [&](size_t i) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!failing_since_[i])
      failing_since_[i] = sent;
  };
  auto slowest = [&](const response& r, node* n) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (r.elapsed_s > slowest_s_) {
      slowest_s_ = r.elapsed_s;
      slowest_ = std::to_string(r.elapsed_s) + " s, ended "
                 + rfc3339(now_ms()) + ", via port "
                 + std::to_string(n->port()) + ": " + r.describe();
    }
  };
  size_t k = 0;
  while (!stop_) {
    auto idx = mine[k++ % mine.size()];
    auto& d = devices_[idx];
    auto* n = pick(rng);
    if (n == nullptr) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    sent = clock_type::now();
    if (d.token.empty()) {
      auto r = n->post("/api/v1/device/login",
                       {{"device_id", d.id}, {"secret", d.secret}});
      slowest(r, n);
      if (r.status == 200) {
        d.token = r.body.value("token", "");
      } else {
        fail_start(idx);
        note(r.status, r.status == 503 || r.status == 429 || r.status == 0
                         ? ""
                         : "device login: " + r.describe());
        std::this_thread::sleep_for(20ms);
      }
      continue;
    }
    json pts = json::array();
    for (int i = 0; i < points_per_batch; ++i) {
      auto seq = d.next_seq++;
      pts.push_back({{"metric", load_metric},
                     {"value", static_cast<double>(d.index * 1'000'000 + seq)},
                     {"ts", base_ts_ + seq}});
    }
    auto batch_id = d.next_batch++;
    json body{{"batch_id", batch_id}, {"points", std::move(pts)}};
    sent = clock_type::now();
    auto r = post_telemetry(*n, d.token, body);
    slowest(r, n);
    switch (r.status) {
      case 202:
        if (r.body.value("accepted", -1) != points_per_batch) {
          note(r.status, "202 with accepted != batch size: " + r.describe());
          break;
        }
        {
          std::lock_guard<std::mutex> guard{mtx_};
          ++statuses_[202];
          acked_.push_back({idx, batch_id, std::move(body)});
          auto now = clock_type::now();
          auto since = failing_since_[idx] ? *failing_since_[idx] : sent;
          double s = std::chrono::duration<double>(now - since).count();
          if (s > longest_s_) {
            longest_s_ = s;
            longest_dev_ = d.id;
          }
          failing_since_[idx].reset();
          last_ok_[idx] = now;
        }
        ++acked_count_;
        break;
      case 429:
      case 503:
        fail_start(idx);
        note(r.status, r.has_header("Retry-After")
                         ? ""
                         : std::to_string(r.status)
                             + " without Retry-After: " + r.describe());
        std::this_thread::sleep_for(50ms);
        break;
      case 0:
        // No answer (a node went away): the fate of the batch is unknown.
        fail_start(idx);
        note(0, "");
        std::this_thread::sleep_for(20ms);
        break;
      case 401:
        fail_start(idx);
        note(401, "401 for a valid device token via port "
                    + std::to_string(n->port()) + ": " + r.describe());
        d.token.clear();
        break;
      default:
        fail_start(idx);
        note(r.status, "via port " + std::to_string(n->port()) + ": "
                         + r.describe());
        std::this_thread::sleep_for(20ms);
    }
  }
}

} // namespace troupe::test::cluster
