// Three nodes on one database: they agree on membership and the shard map,
// and any node answers any request (register on one, log in on another,
// upload on a third, read on yet another; a command posted on one node
// reaches a device long-polling on another). A clean stop (SIGTERM) of one
// member hands its shards to the others, and the node exits 0 promptly.

#include "tests/cluster/cluster_harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <future>

using namespace troupe::test;
using namespace troupe::test::cluster;

TEST_CASE("three nodes agree on the cluster and serve any request anywhere",
          "[cluster]") {
  test_cluster c;
  auto& n1 = c.add("node1");
  auto& n2 = c.add("node2");
  auto& n3 = c.add("node3");
  std::vector<node*> all{&n1, &n2, &n3};

  // -- membership and the shard map ------------------------------------------
  {
    auto problem = wait_converged(all, {"node1", "node2", "node3"}, 30s);
    INFO(problem);
    REQUIRE(problem.empty());
  }
  for (auto* n : all) {
    auto v = cluster_view(*n);
    INFO("view from " << n->port() << ": " << v.dump());
    CHECK(v["members"].size() == 3);
    CHECK(v["coordinator"].is_string());
    CHECK(v["moving"].is_array());
    for (auto& m : v["members"]) {
      CHECK(m["state"] == "alive");
      CHECK(m["shards"].get<int64_t>() > 0);
      CHECK(m["http"].is_string());
      CHECK(m["address"].is_string());
      CHECK(m["since_ms"].get<int64_t>() > 0);
    }
  }
  // Served shards settle at 1024 in total (each node past the barrier).
  {
    std::string last;
    bool settled = eventually(
      [&] {
        int64_t owned = 0, served = 0;
        last.clear();
        for (auto* n : all) {
          auto o = metric(*n, series("troupe_shards_owned", "device"));
          auto s = metric(*n, series("troupe_shards_served", "device"));
          owned += o ? static_cast<int64_t>(*o) : 0;
          served += s ? static_cast<int64_t>(*s) : 0;
          last += std::to_string(n->port()) + ": owned "
                  + (o ? std::to_string(*o) : "?") + " served "
                  + (s ? std::to_string(*s) : "?") + "; ";
        }
        return owned == shard_count && served == shard_count;
      },
      20s, 100ms);
    INFO(last);
    CHECK(settled);
  }
  {
    INFO(newest_map_problems(*c.db()));
    CHECK(newest_map_problems(*c.db()).empty());
  }

  // -- devices: register on 1, log in on 2, upload on 3, read on 1 -------------
  auto tenant = make_tenant(n1);
  auto viewer = make_user(n1, "viewer", tenant);
  // The viewer's session is used on every node (sessions are sharded too).
  auto operator_ = make_user(n2, "operator", tenant);
  constexpr size_t device_count = 60;
  std::vector<std::string> ids;
  for (size_t i = 0; i < device_count; ++i)
    ids.push_back(unique_id("three"));
  auto creds = n1.register_devices(n1.admin_token(), ids, tenant);
  REQUIRE(creds.size() == device_count);
  auto base_ts = now_ms() - 3'600'000;
  struct dev {
    std::string id, secret, token;
    size_t login, upload, read;
  };
  std::vector<dev> devs;
  for (size_t i = 0; i < device_count; ++i)
    devs.push_back({creds[i].id, creds[i].secret, "", (i + 1) % 3, (i + 2) % 3,
                    i % 3});
  for (auto& d : devs)
    d.token = all[d.login]->device_login(d.id, d.secret);
  for (size_t i = 0; i < device_count; ++i) {
    auto& d = devs[i];
    for (int b = 0; b < 2; ++b) {
      json body{{"batch_id", b + 1},
                {"points",
                 {{{"metric", "temp"},
                   {"value", static_cast<double>(i) + b / 10.0},
                   {"ts", base_ts + b * 1000}},
                  {{"metric", "hum"},
                   {"value", 40.0 + static_cast<double>(b)},
                   {"ts", base_ts + b * 1000}}}}};
      auto r = post_telemetry(*all[d.upload], d.token, body);
      INFO("device " << d.id << " batch " << b + 1 << " via node"
                     << d.upload + 1 << ": " << r.describe());
      REQUIRE(r.status == 202);
      CHECK(r.body["accepted"] == 2);
    }
    // A retried batch is a duplicate wherever it lands.
    json again{{"batch_id", 2},
               {"points",
                {{{"metric", "temp"}, {"value", 0.0}, {"ts", base_ts}}}}};
    auto dup = post_telemetry(*all[d.read], d.token, again);
    INFO("duplicate of " << d.id << ": " << dup.describe());
    CHECK(dup.status == 200);
    CHECK(dup.body["duplicate"] == true);
  }
  for (size_t i = 0; i < device_count; ++i) {
    auto& d = devs[i];
    auto& reader = *all[d.read];
    auto r = reader.get("/api/v1/devices/" + d.id, viewer.token);
    INFO("detail of " << d.id << " via node" << d.read + 1 << ": "
                      << r.describe());
    REQUIRE(r.status == 200);
    CHECK(r.body["id"] == d.id);
    CHECK(r.body["tenant"] == tenant);
    CHECK(r.body["latest"]["temp"]["value"].get<double>()
          == Approx(static_cast<double>(i) + 0.1));
    CHECK(r.body["latest"]["hum"]["value"].get<double>() == Approx(41.0));
    auto pts = history(reader, viewer.token, d.id, "temp");
    INFO("history: " << pts.dump());
    CHECK(pts.size() == 2);
    CHECK(has_point(pts, base_ts, static_cast<double>(i)));
    CHECK(has_point(pts, base_ts + 1000, static_cast<double>(i) + 0.1));
  }
  // The device list (a database query) is the same from every node.
  for (auto* n : all) {
    auto r = n->get("/api/v1/devices?limit=1000", viewer.token);
    INFO(r.describe());
    REQUIRE(r.status == 200);
    CHECK(list_items(r).size() == device_count);
  }

  // -- a command posted on node 2 reaches a device long-polling on node 3 ------
  for (size_t i = 0; i < 6; ++i) {
    auto& d = devs[i];
    auto poll = std::async(std::launch::async, [&] {
      auto t0 = clock_type::now();
      auto r = n3.get("/api/v1/device/commands?wait=10", d.token, {}, 30s);
      return std::make_pair(r, clock_type::now() - t0);
    });
    // The poll is in and holding (no commands yet): it has not answered.
    REQUIRE(poll.wait_for(400ms) == std::future_status::timeout);
    auto posted_at = clock_type::now();
    auto cr = n2.post("/api/v1/devices/" + d.id + "/commands",
                      {{"name", "reboot"}, {"args", {{"n", i}}}, {"ttl_s", 600}},
                      operator_.token);
    INFO("command for " << d.id << ": " << cr.describe());
    REQUIRE(cr.status == 201);
    auto cmd_id = cr.body["id"];
    REQUIRE(poll.wait_for(15s) == std::future_status::ready);
    auto [pr, took] = poll.get();
    auto after_post = std::chrono::duration<double>(clock_type::now()
                                                    - posted_at)
                        .count();
    INFO("long-poll answer: " << pr.describe() << " after "
                              << std::chrono::duration<double>(took).count()
                              << " s, " << after_post << " s after the post");
    REQUIRE(pr.status == 200);
    REQUIRE(pr.body["commands"].is_array());
    REQUIRE(pr.body["commands"].size() == 1);
    CHECK(pr.body["commands"][0]["id"] == cmd_id);
    CHECK(pr.body["commands"][0]["name"] == "reboot");
    // Promptly: well before the 10 s wait ran out.
    CHECK(after_post < 2.0);
    // The result goes back through node 1.
    auto res = n1.post("/api/v1/device/commands/"
                         + cmd_id.get<std::string>() + "/result",
                       {{"status", "done"}, {"result", {{"ok", true}}}},
                       d.token);
    INFO(res.describe());
    CHECK(res.status == 200);
    auto list = n3.get("/api/v1/devices/" + d.id + "/commands", viewer.token);
    INFO(list.describe());
    REQUIRE(list.status == 200);
    auto items = list_items(list);
    REQUIRE(items.size() == 1);
    CHECK(items[0]["status"] == "done");
  }

  // -- forwarding happened ------------------------------------------------------
  double forwarded = 0;
  for (auto* n : all)
    forwarded
      += metric(*n, series("troupe_forwarded_requests_total", "device"))
           .value_or(0);
  CHECK(forwarded > 0);
  for (auto* n : all) {
    CHECK(metric(*n, "troupe_cluster_members").value_or(0) == 3);
    auto v = metric(*n, "troupe_shard_map_version");
    CHECK(v.value_or(0) >= 1);
  }
}

// Regression: a cluster node's clean stop once hung in ~actor_system, which
// waited for the detached membership actor whose handle the cluster service
// kept.
TEST_CASE("a member stopped with SIGTERM drains, leaves and exits 0 promptly",
          "[cluster][stop]") {
  test_cluster c;
  auto& n1 = c.add("node1");
  auto& n2 = c.add("node2");
  auto& n3 = c.add("node3");
  {
    auto problem = wait_converged({&n1, &n2, &n3}, {"node1", "node2", "node3"},
                                  30s);
    INFO(problem);
    REQUIRE(problem.empty());
  }
  auto tenant = make_tenant(n1);
  auto viewer = make_user(n1, "viewer", tenant);
  std::vector<device_login_info> devs;
  for (int i = 0; i < 20; ++i) {
    device_login_info d;
    d.id = unique_id("stop");
    d.secret = n1.register_device(n1.admin_token(), d.id, tenant);
    d.token = (i % 2 ? n2 : n3).device_login(d.id, d.secret);
    json body{{"batch_id", 1},
              {"points", {{{"metric", "temp"}, {"value", 1.0},
                           {"ts", now_ms() - 60'000}}}}};
    auto r = post_telemetry(i % 2 ? n3 : n2, d.token, body);
    INFO(r.describe());
    REQUIRE(r.status == 202);
    devs.push_back(d);
  }

  // SIGTERM node 3: it drains itself, leaves, and exits 0.
  auto version_before = cluster_view(n1)["shard_map_version"].get<int64_t>();
  auto t0 = clock_type::now();
  auto rc = n3.stop(20s);
  auto stop_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  {
    INFO("node3 stopped with " << rc << " after " << stop_s << " s");
    CHECK(rc == 0);
    CHECK(stop_s < 15.0);
  }
  auto state = c.db()->query("SELECT state FROM members WHERE id = 'node3'");
  REQUIRE(state.size() == 1);
  CHECK(state[0][0] == "left");
  {
    auto problem = wait_converged({&n1, &n2}, {"node1", "node2"}, 20s);
    INFO(problem);
    CHECK(problem.empty());
  }
  CHECK(cluster_view(n2)["shard_map_version"].get<int64_t>() > version_before);
  {
    INFO(newest_map_problems(*c.db()));
    CHECK(newest_map_problems(*c.db()).empty());
  }
  // Everything is still readable, and every device uploads again.
  for (size_t i = 0; i < devs.size(); ++i) {
    auto& d = devs[i];
    auto* via = i % 2 ? &n1 : &n2;
    auto r = via->get("/api/v1/devices/" + d.id, viewer.token);
    INFO(d.id << ": " << r.describe());
    CHECK(r.status == 200);
    json body{{"batch_id", 2},
              {"points", {{{"metric", "temp"}, {"value", 1.5},
                           {"ts", now_ms() - 30'000}}}}};
    auto up = post_telemetry(*via, d.token, body);
    INFO(up.describe());
    CHECK(up.status == 202);
  }

  // Drain node 2 through the API, then SIGTERM it: it exits 0 promptly too.
  auto dr = n1.post("/api/v1/cluster/nodes/node2/drain", json::object(),
                    n1.admin_token());
  INFO(dr.describe());
  REQUIRE(dr.status == 202);
  CHECK(eventually(
    [&] {
      auto m = member_of(cluster_view(n1), "node2");
      return m.is_object() && m.value("state", "") == "drained";
    },
    30s, 100ms));
  t0 = clock_type::now();
  rc = n2.stop(20s);
  stop_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  {
    INFO("node2 (drained) stopped with " << rc << " after " << stop_s << " s");
    CHECK(rc == 0);
    CHECK(stop_s < 15.0);
  }
  state = c.db()->query("SELECT state FROM members WHERE id = 'node2'");
  REQUIRE(state.size() == 1);
  CHECK(state[0][0] == "left");
  CHECK(metric(n1, series("troupe_shards_served", "device")).value_or(0)
        == shard_count);
}

TEST_CASE("each device is analysed by one node, the owner of its shard",
          "[cluster][analysis]") {
  // Two nodes, a tenant rule every device breaches: each (rule, device)
  // pair is evaluated by exactly one node per pass, and each device gets
  // one alert.
  test_cluster c;
  std::vector<std::pair<std::string, std::string>> fast{
    {"analysis.interval_ms", "300"}};
  auto& n1 = c.add("node1", {}, fast);
  auto& n2 = c.add("node2", {}, fast);
  {
    auto problem = wait_converged({&n1, &n2}, {"node1", "node2"}, 30s);
    INFO(problem);
    REQUIRE(problem.empty());
  }
  auto admin = n1.admin_token();
  auto tenant = make_tenant(n1);
  constexpr size_t count = 40;
  std::vector<std::string> ids;
  for (size_t i = 0; i < count; ++i)
    ids.push_back(unique_id("an"));
  auto creds = n1.register_devices(admin, ids, tenant);
  auto rule = n2.post("/api/v1/rules",
                      {{"metric", "heat"}, {"op", ">"}, {"value", 0},
                       {"tenant", tenant}},
                      admin);
  TROUPE_REQUIRE_STATUS(rule, 201);
  for (size_t i = 0; i < count; ++i) {
    auto& n = i % 2 ? n1 : n2;
    auto token = n.device_login(creds[i].id, creds[i].secret);
    TROUPE_REQUIRE_STATUS(
      post_telemetry(n, token, {{"values", {{"heat", 1 + int(i)}}}}), 202);
  }
  // Each data shard's analysis counts its own devices.
  auto items = [&](node& n) {
    auto sum = metric(n, "troupe_analysis_last_pass_items{pass=\"rules\"}")
                 .value_or(-1);
    for (size_t s = 1; s < c.data_dbs().size(); ++s)
      sum += metric(n, "troupe_analysis_last_pass_items{pass=\"rules\","
                       "data_shard=\"" + std::to_string(s) + "\"}")
               .value_or(0);
    return sum;
  };
  std::string last;
  bool split = eventually(
    [&] {
      auto a = items(n1), b = items(n2);
      last = std::to_string(a) + " + " + std::to_string(b);
      return a > 0 && b > 0 && a + b == double(count);
    },
    30s, 100ms);
  INFO("rule evaluations per node in the last pass: " << last);
  CHECK(split);
  // One open alert per device.
  bool alerted = eventually(
    [&] {
      auto r = n1.get("/api/v1/alerts?state=open&limit=1000", admin);
      if (r.status != 200)
        return false;
      size_t mine = 0;
      for (auto& a : list_items(r))
        if (std::find(ids.begin(), ids.end(), a.value("device_id", ""))
            != ids.end())
          ++mine;
      last = std::to_string(mine);
      return mine == count;
    },
    30s, 200ms);
  INFO("open alerts for the tenant's devices: " << last);
  CHECK(alerted);
}
