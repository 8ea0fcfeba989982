// Operations side of API.md (/healthz, /readyz, /metrics, cluster), the
// cross-cutting conventions (unknown routes, wrong methods, gzip both ways)
// and the process contract (SIGTERM drains and exits 0).

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <sstream>

#include <signal.h>

using namespace troupe::test;

TEST_CASE("healthz and readyz answer 200", "[ops]") {
  auto& n = shared_node();
  TROUPE_CHECK_STATUS(n.get("/healthz"), 200);
  TROUPE_CHECK_STATUS(n.get("/readyz"), 200);
}

TEST_CASE("metrics are Prometheus text with troupe_ series", "[ops]") {
  auto& n = shared_node();
  // Some traffic first, so request counters exist.
  TROUPE_REQUIRE_STATUS(n.get("/api/v1/me", n.admin_token()), 200);
  auto r = n.get("/metrics");
  INFO(r.describe());
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type").rfind("text/plain", 0) == 0);
  std::istringstream in{r.raw};
  std::string line;
  size_t series = 0;
  while (std::getline(in, line)) {
    if (line.rfind("troupe_", 0) == 0)
      ++series;
  }
  CHECK(series > 0);
}

TEST_CASE("unknown routes are 404 and wrong methods 405, with error bodies",
          "[ops][errors]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  TROUPE_CHECK_ERROR(n.get("/api/v1/no-such-thing", admin), 404);
  TROUPE_CHECK_ERROR(n.get("/api/v2/devices", admin), 404);
  TROUPE_CHECK_ERROR(n.request("DELETE", "/api/v1/login", "", "", {}, admin),
                     405);
  TROUPE_CHECK_ERROR(n.request("PUT", "/api/v1/me", "{}", "application/json",
                               {}, admin),
                     405);
  TROUPE_CHECK_ERROR(n.get("/api/v1/logout", admin), 405);
  TROUPE_CHECK_ERROR(n.request("PATCH", "/api/v1/admin/users", "{}",
                               "application/json", {}, admin),
                     405);
}

TEST_CASE("gzip: large responses are compressed on request", "[ops][gzip]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto base = now_ms() - 3'600'000;
  json pts = json::array();
  for (int i = 0; i < 300; ++i)
    pts.push_back({{"metric", "gz"}, {"value", i * 0.5}, {"ts", base + i * 1000}});
  TROUPE_REQUIRE_STATUS(post_telemetry(n, dev.token, {{"points", pts}}), 202);
  wait_history(n, n.admin_token(), dev.id, "gz", 300);

  auto cli = n.http();
  cli.set_decompress(false);
  auto res = cli.Get(("/api/v1/devices/" + dev.id + "/telemetry?metric=gz").c_str(),
                     httplib::Headers{{"Authorization", "Bearer " + n.admin_token()},
                                      {"Accept-Encoding", "gzip"}});
  REQUIRE(res);
  INFO("status " << res->status);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("Content-Encoding") == "gzip");
  std::string plain;
  REQUIRE_NOTHROW(plain = gunzip(res->body));
  CHECK(res->body.size() < plain.size());
  auto body = json::parse(plain, nullptr, false);
  REQUIRE_FALSE(body.is_discarded());
  CHECK(body["points"].size() == 300);
}

TEST_CASE("gzip: compressed request bodies are accepted", "[ops][gzip]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto base = now_ms() - 600'000;
  json pts = json::array();
  for (int i = 0; i < 50; ++i)
    pts.push_back({{"metric", "gzin"}, {"value", i}, {"ts", base + i}});
  auto body = gzip(json{{"points", pts}}.dump());
  auto r = n.request("POST", "/api/v1/device/telemetry", body,
                     "application/json", {{"Content-Encoding", "gzip"}},
                     dev.token);
  INFO(r.describe());
  CHECK(r.status == 202);
  CHECK(r.body["accepted"] == 50);
  CHECK(wait_history(n, n.admin_token(), dev.id, "gzin", 50).size() == 50);
  // gzip on a user endpoint too.
  auto login = n.request("POST", "/api/v1/login",
                         gzip(json{{"username", "admin"},
                                   {"password", node_options{}.admin_password}}
                                .dump()),
                         "application/json", {{"Content-Encoding", "gzip"}});
  TROUPE_CHECK_STATUS(login, 200);
  // Corrupt gzip is malformed.
  std::string corrupt{"\x1f\x8b\x08", 3};
  corrupt += std::string(7, '\0') + "garbage-not-deflate";
  auto bad = n.request("POST", "/api/v1/device/telemetry", corrupt,
                       "application/json", {{"Content-Encoding", "gzip"}},
                       dev.token);
  INFO(bad.describe());
  CHECK(bad.status == 400);
}

TEST_CASE("cluster view and drain are admin-only", "[ops][cluster]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto r = n.get("/api/v1/cluster", admin);
  INFO(r.describe());
  REQUIRE(r.status == 200);
  REQUIRE(r.body["members"].is_array());
  REQUIRE(r.body["members"].size() >= 1);
  for (auto& m : r.body["members"]) {
    INFO(m.dump());
    CHECK(m["id"].is_string());
    CHECK(m["address"].is_string());
    CHECK(m["state"].is_string());
    CHECK(m.contains("shards"));
    CHECK(m.contains("actors"));
    CHECK(m["since_ms"].is_number());
  }
  // The database tier: the test's PostgreSQL as a primary without standbys
  // or replicas, shown without credentials.
  auto& db = r.body["database"];
  INFO(db.dump());
  CHECK(db["primary"]["role"] == "primary");
  CHECK(db["primary"]["up"] == true);
  CHECK(db["primary"]["standby_policy"] == "none");
  CHECK(db["primary"]["standbys"].is_array());
  CHECK(db["primary"]["address"].get<std::string>().find(':')
        != std::string::npos);
  CHECK(db["replicas"].is_array());
  CHECK(db["replicas"].empty());
  CHECK(db["max_replica_lag_ms"] == 1000);
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  TROUPE_CHECK_ERROR(n.get("/api/v1/cluster", op.token), 403);
  TROUPE_CHECK_ERROR(n.get("/api/v1/cluster"), 401);
  TROUPE_CHECK_ERROR(n.request("POST",
                               "/api/v1/cluster/nodes/"
                                 + r.body["members"][0].value("id", "x")
                                 + "/drain",
                               "", "application/json", {}, op.token),
                     403);
  TROUPE_CHECK_ERROR(n.request("POST",
                               "/api/v1/cluster/nodes/" + unique_id("nonode")
                                 + "/drain",
                               "", "application/json", {}, admin),
                     404);
}

TEST_CASE("SIGTERM drains and exits 0; data survives a restart",
          "[ops][process]") {
  node n;
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto ts = now_ms() - 1000;
  TROUPE_REQUIRE_STATUS(post_telemetry(n, dev.token,
                                       {{"batch_id", 1},
                                        {"points",
                                         {{{"metric", "m"},
                                           {"value", 1.5},
                                           {"ts", ts}}}}}),
                        202);
  CHECK(n.stop() == 0);
  n.start();
  CHECK(has_point(wait_history(n, n.admin_token(), dev.id, "m", 1), ts, 1.5));
  // The device logs in again and its batch ids are remembered.
  auto token = n.device_login(dev.id, dev.secret);
  auto again = post_telemetry(n, token,
                              {{"batch_id", 1},
                               {"points",
                                {{{"metric", "m"}, {"value", 1.5}, {"ts", ts}}}}});
  TROUPE_CHECK_STATUS(again, 200);
  CHECK(again.body["duplicate"] == true);
  CHECK(n.stop() == 0);
}

TEST_CASE("a crash leaves the signal and a backtrace in the log",
          "[ops][process]") {
  node n;
  REQUIRE(::kill(n.pid(), SIGSEGV) == 0);
  CHECK(eventually([&] { return !n.running(); }, 20s));
  auto log = n.log_tail(100000);
  INFO(log.substr(log.size() > 4000 ? log.size() - 4000 : 0));
  CHECK(log.find("fatal signal 11 (SIGSEGV)") != std::string::npos);
  CHECK(log.find("backtrace:") != std::string::npos);
  CHECK(log.find("the process dies now") != std::string::npos);
}
