// Durability: every point answered 202 is stored, through a SIGKILL of the
// node mid-load and through PostgreSQL going away mid-load (the node's spool
// replays). Verified with direct queries on the telemetry table.
//
// Runs serially (RUN_SERIAL in CMake): the second test stops the shared test
// PostgreSQL.

#include "tests/integration/acked.hpp"
#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace troupe::test;

namespace {

constexpr int points_per_batch = 20;

/// Uploads from `threads` threads, each owning every threads-th device (so
/// a device's batch ids grow in order), until stopped. Records every batch
/// answered 202 and counts every answer by status.
class load {
public:
  load(node& n, std::vector<device_state> devices, int64_t base_ts,
       size_t threads = 8)
    : n_(n), devices_(std::move(devices)), base_ts_(base_ts) {
    for (size_t t = 0; t < threads; ++t)
      threads_.emplace_back([this, t, threads] { run(t, threads); });
  }

  ~load() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
  }

  size_t acked_batches() const { return acked_count_; }
  size_t answers() const { return answers_; }

  std::vector<acked_batch> acked() {
    std::lock_guard<std::mutex> guard{mtx_};
    return acked_;
  }

  std::map<int, size_t> statuses() {
    std::lock_guard<std::mutex> guard{mtx_};
    return statuses_;
  }

  std::vector<std::string> unexpected() {
    std::lock_guard<std::mutex> guard{mtx_};
    return unexpected_;
  }

  /// Statuses counted from now on go to a fresh map (see `statuses`).
  void reset_statuses() {
    std::lock_guard<std::mutex> guard{mtx_};
    statuses_.clear();
  }

  const std::vector<device_state>& devices() const { return devices_; }

private:
  void note(int status, const std::string& what) {
    std::lock_guard<std::mutex> guard{mtx_};
    ++statuses_[status];
    if (!what.empty() && unexpected_.size() < 20)
      unexpected_.push_back(what);
  }

  void run(size_t first, size_t step) {
    size_t k = 0;
    std::vector<size_t> mine;
    for (size_t i = first; i < devices_.size(); i += step)
      mine.push_back(i);
    if (mine.empty())
      return;
    while (!stop_) {
      auto& d = devices_[mine[k++ % mine.size()]];
      if (d.token.empty()) {
        auto r = n_.post("/api/v1/device/login",
                         {{"device_id", d.id}, {"secret", d.secret}});
        if (r.status == 200)
          d.token = r.body.value("token", "");
        else
          std::this_thread::sleep_for(20ms);
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
      auto r = post_telemetry(n_, d.token, body);
      if (r.status != 0)
        ++answers_;
      switch (r.status) {
        case 202:
          if (r.body.value("accepted", -1) != points_per_batch) {
            note(r.status, "202 with accepted != batch size: " + r.describe());
            break;
          }
          {
            std::lock_guard<std::mutex> guard{mtx_};
            ++statuses_[202];
            acked_.push_back({d.index, batch_id, std::move(body)});
          }
          ++acked_count_;
          break;
        case 503:
          note(503, r.has_header("Retry-After")
                      ? ""
                      : "503 without Retry-After: " + r.describe());
          std::this_thread::sleep_for(50ms);
          break;
        case 401:
          // A valid token refused: wrong (503 is the answer for "cannot
          // check now"). Log in again and go on.
          note(401, "401 for a valid device token: " + r.describe());
          d.token.clear();
          break;
        case 0:
          // The node is down (killed); the fate of this batch is unknown.
          note(0, "");
          std::this_thread::sleep_for(20ms);
          break;
        default:
          note(r.status, r.describe());
          std::this_thread::sleep_for(20ms);
      }
    }
  }

  node& n_;
  std::vector<device_state> devices_;
  int64_t base_ts_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> acked_count_{0};
  std::atomic<size_t> answers_{0};
  std::mutex mtx_;
  std::vector<acked_batch> acked_;
  std::map<int, size_t> statuses_;
  std::vector<std::string> unexpected_;
  std::vector<std::thread> threads_;
};

/// Registers `count` devices in a fresh tenant and logs them in (in parallel).
std::vector<device_state> setup_devices(node& n, size_t count) {
  auto tenant = make_tenant(n);
  std::vector<std::string> ids;
  for (size_t i = 0; i < count; ++i)
    ids.push_back(unique_id("dur"));
  auto creds = n.register_devices(n.admin_token(), ids, tenant);
  std::vector<device_state> out(count);
  std::vector<std::thread> threads;
  std::atomic<size_t> next{0};
  std::mutex err_mtx;
  std::string error;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < count;) {
        out[i].index = i;
        out[i].id = creds[i].id;
        out[i].secret = creds[i].secret;
        try {
          out[i].token = n.device_login(creds[i].id, creds[i].secret);
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

/// Checks (Catch2) that every point of `acked` is stored with its value
/// within `timeout`; returns the verdict for checks of the caller's own.
verdict check_stored(node& n, const std::vector<acked_batch>& acked,
                     const std::vector<device_state>& devices,
                     std::chrono::seconds timeout) {
  auto v = wait_stored({n.db()}, acked, devices, timeout);
  INFO("acked points " << v.acked_points << ", stored rows " << v.rows
                       << ", first missing: " << v.first_missing);
  CHECK(v.acked_points == acked.size() * points_per_batch);
  CHECK(v.missing == 0);
  CHECK(v.wrong_value == 0);
  return v;
}

/// Starts PostgreSQL again, if a test stopped it, for the tests after it.
struct restart_guard {
  pg_server& pg;
  ~restart_guard() {
    if (!pg.running()) {
      try {
        pg.start();
      } catch (const std::exception& e) {
        std::cerr << "error: cannot restart PostgreSQL: " << e.what() << "\n";
      }
    }
  }
};

/// Thaws PostgreSQL, if a test froze it, for the node's stop and the tests
/// after it.
struct thaw_guard {
  pg_server& pg;
  ~thaw_guard() { pg.thaw(); }
};

} // namespace

TEST_CASE("every point answered 202 survives a SIGKILL of the node",
          "[durability]") {
  node n;
  auto devices = setup_devices(n, 50);
  auto base_ts = now_ms() - 2 * 3'600'000;
  load l{n, devices, base_ts};
  // Mid-load: enough acknowledged batches, and still going.
  REQUIRE(eventually([&] { return l.acked_batches() >= 300; }, 60s, 10ms));
  n.kill();
  auto acked_at_kill = l.acked_batches();
  l.stop();
  auto acked = l.acked();
  INFO("statuses: " << describe(l.statuses()));
  for (auto& u : l.unexpected())
    UNSCOPED_INFO("unexpected answer: " << u);
  CHECK(l.unexpected().empty());
  CHECK(acked.size() >= acked_at_kill);

  n.start();
  auto v = check_stored(n, acked, l.devices(), 60s);
  if (v.rows > v.acked_points) {
    // Batches in flight at the kill may be stored without an answer; more
    // rows than acked points is fine, duplicates of acked points are noted.
    WARN("stored rows " << v.rows << " > acked points " << v.acked_points
                        << " (in-flight batches or duplicates)");
  }

  // The batch ids stored before the kill are remembered.
  REQUIRE_FALSE(acked.empty());
  auto& last = acked.back();
  auto& dev = l.devices()[last.device];
  auto token = n.device_login(dev.id, dev.secret);
  auto again = post_telemetry(n, token, last.body);
  INFO(again.describe());
  CHECK(again.status == 200);
  CHECK(again.body["duplicate"] == true);
  CHECK(again.body["accepted"] == 0);
  // And new uploads go on.
  json fresh{{"batch_id", last.batch_id + 1'000'000},
             {"points",
              {{{"metric", load_metric}, {"value", -1.0}, {"ts", base_ts - 1}}}}};
  TROUPE_CHECK_STATUS(post_telemetry(n, token, fresh), 202);
}

TEST_CASE("every point answered 202 while PostgreSQL is down is stored "
          "after it returns",
          "[durability]") {
  pg_server pg;
  node n;
  auto devices = setup_devices(n, 20);
  auto base_ts = now_ms() - 2 * 3'600'000;
  load l{n, devices, base_ts};
  REQUIRE(eventually([&] { return l.acked_batches() >= 100; }, 60s, 10ms));

  // Whatever happens below, PostgreSQL comes back for the tests after us.
  restart_guard guard{pg};

  pg.stop();
  l.reset_statuses();
  auto answers_at_stop = l.answers();
  auto acked_at_stop = l.acked_batches();
  // Keep uploading through the outage.
  CHECK(eventually([&] { return l.answers() >= answers_at_stop + 200; }, 30s,
                   10ms));
  auto during = l.statuses();
  auto acked_during = l.acked_batches() - acked_at_stop;
  pg.start();
  // The node recovers: new batches are acknowledged again.
  auto acked_at_start = l.acked_batches();
  CHECK(eventually([&] { return l.acked_batches() >= acked_at_start + 100; },
                   60s, 10ms));
  l.stop();
  auto acked = l.acked();
  INFO("statuses during the outage: " << describe(during)
                                      << "; acked during the outage: "
                                      << acked_during);
  for (auto& u : l.unexpected())
    UNSCOPED_INFO("unexpected answer: " << u);
  CHECK(l.unexpected().empty());
  for (auto& [status, count] : during) {
    INFO("status " << status << " x " << count);
    CHECK((status == 202 || status == 503));
  }

  check_stored(n, acked, l.devices(), 120s);

  // Once PostgreSQL is back and the node says ready, no request fails:
  // every pooled connection notices the restart before its next query.
  // (Once, the next four logins answered 503, one per pooled connection.)
  REQUIRE(eventually([&] { return n.get("/readyz").status == 200; }, 30s));
  auto tenant = make_tenant(n);
  auto u = make_user(n, "viewer", tenant);
  for (int i = 0; i < 12; ++i) {
    auto r = n.post("/api/v1/login",
                    {{"username", u.username}, {"password", u.password}});
    INFO("login " << i << ": " << r.describe());
    CHECK(r.status == 200);
    TROUPE_CHECK_STATUS(n.get("/api/v1/devices?limit=5", u.token), 200);
  }
}

TEST_CASE("a PostgreSQL that hangs without failing: uploads are refused in "
          "time, the node serves on, nothing acknowledged is lost",
          "[durability][freeze]") {
  // Every PostgreSQL process SIGSTOPped: its sockets stay open and nothing
  // answers, as with a stalled disk or a paused VM (no error, no reset, no
  // TCP timeout). No upload may hang past the request deadline: each is
  // answered 202 (committed before the freeze) or 503 with Retry-After;
  // what needs no database is served meanwhile; after the thaw uploads are
  // acknowledged again and every acknowledged point is stored.
  pg_server pg;
  node n{node_options{{{"http.request_timeout_ms", "2000"}}}};
  auto devices = setup_devices(n, 10);
  auto base_ts = now_ms() - 2 * 3'600'000;
  load l{n, devices, base_ts, 4};
  REQUIRE(eventually([&] { return l.acked_batches() >= 50; }, 60s, 10ms));

  thaw_guard guard{pg};
  pg.freeze();
  l.reset_statuses();
  auto answers_at_freeze = l.answers();
  // Four uploaders, each answered at the latest at the 2 s deadline: the
  // answers go on while nothing is committed.
  CHECK(eventually([&] { return l.answers() >= answers_at_freeze + 8; }, 30s,
                   50ms));
  auto health = n.get("/healthz", "", {}, 5s);
  CHECK(health.status == 200);
  CHECK(health.elapsed_s < 2.0);
  TROUPE_CHECK_STATUS(n.get("/metrics", "", {}, 5s), 200);
  auto during = l.statuses();
  pg.thaw();

  auto acked_at_thaw = l.acked_batches();
  CHECK(eventually([&] { return l.acked_batches() >= acked_at_thaw + 50; },
                   60s, 10ms));
  l.stop();
  INFO("statuses while frozen: " << describe(during));
  for (auto& u : l.unexpected())
    UNSCOPED_INFO("unexpected answer: " << u);
  CHECK(l.unexpected().empty());
  CHECK(during[503] > 0);
  for (auto& [status, count] : during) {
    INFO("status " << status << " x " << count);
    CHECK((status == 202 || status == 503));
  }
  auto acked = l.acked();
  check_stored(n, acked, l.devices(), 60s);
}

TEST_CASE("a failing importer is restarted; nothing acknowledged is lost",
          "[durability][supervision]") {
  // Fault injection: every importer throws before every 7th group commit.
  // Its held requests answer 503 (not stored, not acknowledged), the
  // supervisor restarts it, and the devices keep being served.
  node n{node_options{{{"ingest.crash_every_flushes", "7"},
                       {"analysis.restart_backoff_ms", "50"},
                       {"analysis.max_restarts", "1000"}}}};
  auto devices = setup_devices(n, 24);
  auto base_ts = now_ms() - 2 * 3'600'000;
  load l{n, devices, base_ts};
  // Each injected failure answers 503 and its clients wait out Retry-After,
  // so batches are acknowledged slowly (about 5/s on 2 cores): enough of
  // them to span several failures, with room for a busy machine.
  REQUIRE(eventually([&] { return l.acked_batches() >= 150; }, 150s, 10ms));
  l.stop();
  auto statuses = l.statuses();
  INFO("statuses: " << describe(statuses));
  for (auto& u : l.unexpected())
    UNSCOPED_INFO("unexpected answer: " << u);
  for (auto& [status, count] : statuses) {
    INFO("status " << status << " x " << count);
    CHECK((status == 202 || status == 503));
  }
  CHECK(statuses[503] > 0);
  CHECK(metric(n, "troupe_supervisor_restarts_total{worker=\"importer-0\"}")
          .value_or(0)
        >= 1);
  auto acked = l.acked();
  check_stored(n, acked, l.devices(), 60s);
  CHECK(n.log_tail(100000).find("injected importer failure")
        != std::string::npos);
}

TEST_CASE("points spooled while the primary ran alone are replayed into a "
          "new primary that lacks them",
          "[durability][standby]") {
  // storage.standby_policy=spool on a server without a synchronous standby:
  // every commit is unreplicated, so each batch is committed and kept in the
  // spool until a standby has it. Then the primary changes for one that
  // lacks those commits (a promoted standby that was behind; here the same
  // server restarted, which gives it a new epoch, with the chunks deleted)
  // while no device uploads: the importer's replay timer alone must put
  // every acknowledged point back.
  pg_server pg;
  node n{node_options{{{"storage.standby_policy", "spool"}}}};
  auto devices = setup_devices(n, 8);
  auto base_ts = now_ms() - 2 * 3'600'000;
  load l{n, devices, base_ts, 4};
  REQUIRE(eventually([&] { return l.acked_batches() >= 40; }, 60s, 10ms));
  l.stop();
  auto acked = l.acked();
  auto v = wait_stored({n.db()}, acked, l.devices(), 30s);
  REQUIRE(v.missing == 0);
  CHECK(metric_sum(n, "troupe_ingest_primary_alone") >= 1);
  REQUIRE(metric_sum(n, "troupe_spool_bytes") > 0);

  restart_guard guard{pg};
  n.db()->query("DELETE FROM telemetry_chunks");
  REQUIRE(n.db()->query("SELECT count(*) FROM telemetry")[0][0] == "0");
  pg.stop();
  pg.start();

  v = wait_stored({n.db()}, acked, l.devices(), 60s);
  INFO("acked points " << v.acked_points << ", stored rows " << v.rows
                       << ", first missing: " << v.first_missing << "\n"
                       << n.log_tail());
  CHECK(v.missing == 0);
  CHECK(v.wrong_value == 0);
  // Still no standby: the records stay spooled until one has them.
  CHECK(metric_sum(n, "troupe_spool_bytes") > 0);
}
