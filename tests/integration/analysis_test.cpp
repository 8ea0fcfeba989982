// Analysis, alerts and rules (API.md, user side). The node runs its
// analysis passes every second (analysis.interval_ms), so results show up
// quickly; the waits stay generous. Silence alerts run on a node of their
// own with a 3 s window.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

using namespace troupe::test;

namespace {

/// One node per test executable with a fast analysis interval.
node& analysis_node() {
  static std::unique_ptr<node> instance;
  if (!instance) {
    node_options opts;
    opts.settings.emplace_back("analysis.interval_ms", "1000");
    instance = std::make_unique<node>(opts);
  }
  return *instance;
}

struct fixture {
  node& n = analysis_node();
  std::string tenant = make_tenant(n);
  user_login op = make_user(n, "operator", tenant);
  user_login viewer = make_user(n, "viewer", tenant);
  device_login_info dev = make_device(n, tenant);
};

bool is_2xx(const response& r) { return r.status >= 200 && r.status < 300; }

json rule_body(const std::string& metric, const std::string& op, double value,
               int for_s) {
  return {{"metric", metric}, {"op", op}, {"value", value}, {"for_s", for_s}};
}

json find_by_id(const json& items, const json& id) {
  for (auto& i : items)
    if (i.is_object() && i.contains("id") && i["id"] == id)
      return i;
  return nullptr;
}

/// Whether an open silence alert names device `id`.
bool silence_open(node& n, const std::string& token, const std::string& id) {
  auto a = n.get("/api/v1/alerts?state=open", token);
  REQUIRE(a.status == 200);
  for (auto& i : list_items(a))
    if (i["kind"] == "silence" && i["device_id"] == id)
      return true;
  return false;
}

void poll_once(node& n, const device_login_info& d) {
  TROUPE_REQUIRE_STATUS(n.get("/api/v1/device/commands?wait=0", d.token),
                        200);
}

/// For 8 s `polling` polls every 250 ms and must never be reported silent;
/// returns whether `quiet`, which sends nothing, was.
bool poll_beside_quiet(node& n, const std::string& token,
                       const device_login_info& polling,
                       const std::string& quiet_id) {
  bool quiet_alerted = false;
  auto until = std::chrono::steady_clock::now() + 8s;
  while (std::chrono::steady_clock::now() < until) {
    poll_once(n, polling);
    CHECK_FALSE(silence_open(n, token, polling.id));
    quiet_alerted = quiet_alerted || silence_open(n, token, quiet_id);
    std::this_thread::sleep_for(250ms);
  }
  return quiet_alerted;
}

} // namespace

TEST_CASE("analysis: per-metric results for a device", "[analysis]") {
  fixture f;
  auto base = now_ms() - 2 * 3'600'000;
  json pts = json::array();
  for (int i = 0; i < 120; ++i)
    pts.push_back({{"metric", "temp"},
                   {"value", 20 + (i % 5)},
                   {"ts", base + i * 60'000}});
  TROUPE_REQUIRE_STATUS(post_telemetry(f.n, f.dev.token, {{"points", pts}}), 202);
  json body;
  bool has_temp = eventually(
    [&] {
      auto r = f.n.get("/api/v1/devices/" + f.dev.id + "/analysis",
                       f.viewer.token);
      body = r.body;
      return r.status == 200 && r.raw.find("temp") != std::string::npos;
    },
    90s, 500ms);
  INFO(body.dump());
  CHECK(has_temp);
  CHECK(body.is_object());
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/devices/" + unique_id("nodev")
                               + "/analysis",
                             f.op.token),
                     404);
  auto stranger = make_user(f.n, "viewer", make_tenant(f.n));
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/devices/" + f.dev.id + "/analysis",
                             stranger.token),
                     404);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/devices/" + f.dev.id + "/analysis"), 401);
}

TEST_CASE("rules: create, list, delete; roles", "[rules]") {
  fixture f;
  auto r = f.n.post("/api/v1/rules", rule_body("temp", ">", 80, 60), f.op.token);
  INFO(r.describe());
  REQUIRE((r.status == 201 || r.status == 200));
  REQUIRE(r.body.contains("id"));
  auto id = r.body["id"];
  auto id_str = id.is_string() ? id.get<std::string>() : id.dump();
  auto list = f.n.get("/api/v1/rules", f.viewer.token);
  TROUPE_REQUIRE_STATUS(list, 200);
  auto rule = find_by_id(list_items(list), id);
  INFO(list.raw);
  REQUIRE(rule.is_object());
  CHECK(rule["metric"] == "temp");
  CHECK(rule["op"] == ">");
  CHECK(rule["value"] == 80);
  CHECK(rule["for_s"] == 60);
  // Per device.
  auto per_device = rule_body("hum", "<", 10, 0);
  per_device["device_id"] = f.dev.id;
  auto r2 = f.n.post("/api/v1/rules", per_device, f.op.token);
  CHECK((r2.status == 201 || r2.status == 200));
  // Not visible to another tenant.
  auto stranger = make_user(f.n, "operator", make_tenant(f.n));
  auto other = f.n.get("/api/v1/rules", stranger.token);
  TROUPE_REQUIRE_STATUS(other, 200);
  CHECK(find_by_id(list_items(other), id).is_null());
  TROUPE_CHECK_ERROR(f.n.del("/api/v1/rules/" + id_str, stranger.token), 404);
  // Roles and validation.
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/rules", rule_body("temp", ">", 1, 0),
                              f.viewer.token),
                     403);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/rules", rule_body("temp", "~", 1, 0),
                              f.op.token),
                     400);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/rules",
                              {{"metric", "temp"}, {"op", ">"}, {"value", "hot"}},
                              f.op.token),
                     400);
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/rules", "{", "application/json",
                                 {}, f.op.token),
                     400);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/rules"), 401);
  // Delete.
  TROUPE_CHECK_ERROR(f.n.del("/api/v1/rules/" + id_str, f.viewer.token), 403);
  auto d = f.n.del("/api/v1/rules/" + id_str, f.op.token);
  INFO(d.describe());
  CHECK(is_2xx(d));
  auto after = f.n.get("/api/v1/rules", f.op.token);
  CHECK(find_by_id(list_items(after), id).is_null());
  TROUPE_CHECK_ERROR(f.n.del("/api/v1/rules/" + id_str, f.op.token), 404);
}

TEST_CASE("alerts: a breached rule opens an alert that can be closed",
          "[alerts]") {
  fixture f;
  auto metric = "heat";
  auto r = f.n.post("/api/v1/rules", rule_body(metric, ">", 80, 0), f.op.token);
  TROUPE_REQUIRE_STATUS(r, 201);
  // Breach it for a while, with fresh points.
  json alert;
  bool opened = eventually(
    [&] {
      post_telemetry(f.n, f.dev.token, {{"values", {{metric, 95}}}});
      auto a = f.n.get("/api/v1/alerts?state=open", f.viewer.token);
      if (a.status != 200)
        return false;
      for (auto& i : list_items(a))
        if (i.dump().find(f.dev.id) != std::string::npos)
          alert = i;
      return alert.is_object();
    },
    120s, 1000ms);
  INFO(alert.dump());
  REQUIRE(opened);
  REQUIRE(alert.contains("id"));
  auto id = alert["id"].is_string() ? alert["id"].get<std::string>()
                                    : alert["id"].dump();
  // The device filter (the console's device page): its alert is there, and
  // not under another device of the tenant.
  auto mine = f.n.get("/api/v1/alerts?device=" + f.dev.id, f.viewer.token);
  TROUPE_REQUIRE_STATUS(mine, 200);
  CHECK(find_by_id(list_items(mine), alert["id"]).is_object());
  for (auto& i : list_items(mine))
    CHECK(i.value("device_id", "") == f.dev.id);
  auto other_dev = make_device(f.n, f.tenant);
  auto not_mine = f.n.get("/api/v1/alerts?device=" + other_dev.id,
                          f.viewer.token);
  TROUPE_REQUIRE_STATUS(not_mine, 200);
  CHECK(list_items(not_mine).empty());
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/alerts?device=no%20such", f.viewer.token),
                     400);
  auto c = f.n.request("POST", "/api/v1/alerts/" + id + "/close", "",
                       "application/json", {}, f.op.token);
  INFO(c.describe());
  CHECK(is_2xx(c));
  auto closed = f.n.get("/api/v1/alerts?state=closed", f.op.token);
  TROUPE_REQUIRE_STATUS(closed, 200);
  CHECK(find_by_id(list_items(closed), alert["id"]).is_object());
  // Another tenant sees none of it.
  auto stranger = make_user(f.n, "operator", make_tenant(f.n));
  auto theirs = f.n.get("/api/v1/alerts?state=closed", stranger.token);
  TROUPE_REQUIRE_STATUS(theirs, 200);
  CHECK(find_by_id(list_items(theirs), alert["id"]).is_null());
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/alerts/" + id + "/close", "",
                                 "application/json", {}, stranger.token),
                     404);
}

TEST_CASE("alerts: errors", "[alerts]") {
  fixture f;
  TROUPE_CHECK_STATUS(f.n.get("/api/v1/alerts?state=open", f.viewer.token), 200);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/alerts?state=sideways", f.viewer.token),
                     400);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/alerts"), 401);
  TROUPE_CHECK_ERROR(f.n.request("POST",
                                 "/api/v1/alerts/" + unique_id("noalert")
                                   + "/close",
                                 "", "application/json", {}, f.op.token),
                     404);
}

TEST_CASE("analysis: a poison input is quarantined, the others go on",
          "[analysis]") {
  fixture f;
  // Three hours whose means are 1e308, -1e308 and 0: the spread of the
  // first two overflows float8, so PostgreSQL refuses the anomaly
  // statistics of the third, and this device's anomaly pass fails every
  // time. (Rollups themselves merge means, never sums: they cope.)
  auto poison = make_device(f.n, f.tenant);
  auto hour = (now_ms() / 3'600'000 - 3) * 3'600'000;
  json pts = json::array(
    {{{"metric", "big"}, {"value", 1e308}, {"ts", hour + 1000}},
     {{"metric", "big"}, {"value", -1e308}, {"ts", hour + 3'601'000}},
     {{"metric", "big"}, {"value", 0}, {"ts", hour + 7'201'000}}});
  TROUPE_REQUIRE_STATUS(post_telemetry(f.n, poison.token, {{"points", pts}}),
                        202);
  TROUPE_REQUIRE_STATUS(post_telemetry(f.n, f.dev.token,
                                       {{"values", {{"temp", 21.5}}}}),
                        202);
  auto quarantined = [&] {
    return metric(f.n, "troupe_analysis_quarantined_total").value_or(0);
  };
  CHECK(eventually([&] { return quarantined() >= 1; }, 60s, 500ms));
  // The healthy device's results still come.
  CHECK(eventually(
    [&] {
      auto r = f.n.get("/api/v1/devices/" + f.dev.id + "/analysis",
                       f.viewer.token);
      return r.status == 200 && r.body.contains("metrics")
             && r.body["metrics"].contains("temp");
    },
    60s, 500ms));
}

TEST_CASE("rollups: an hour written by many flushes is rolled up whole, and "
          "every delta is taken",
          "[analysis][rollups]") {
  // Each upload is its own flush and records its own delta for the hour
  // (count, sum, min, max; no unique key, so importers never wait on the
  // pass). The pass must merge all of them, each once.
  fixture f;
  auto hour = (now_ms() - 3 * 3'600'000) / 3'600'000 * 3'600'000;
  constexpr int uploads = 12;
  constexpr int per_upload = 5;
  for (int u = 0; u < uploads; ++u) {
    json pts = json::array();
    for (int i = 0; i < per_upload; ++i)
      pts.push_back({{"metric", "flow"},
                     {"value", u * per_upload + i},
                     {"ts", hour + (u * per_upload + i) * 1000}});
    TROUPE_REQUIRE_STATUS(post_telemetry(f.n, f.dev.token, {{"points", pts}}),
                          202);
  }
  auto& db = *f.n.db();
  auto key_sql = "(SELECT key FROM devices WHERE id = '" + f.dev.id + "')";
  std::string last;
  bool rolled = eventually(
    [&] {
      auto counted = db.query("SELECT count FROM rollups WHERE device_key = "
                              + key_sql);
      auto marks = db.query("SELECT count(*) FROM rollup_deltas WHERE "
                            "device_key = "
                            + key_sql);
      last = "rollup count "
             + (counted.empty() ? std::string{"none"} : counted[0][0])
             + ", marks left " + marks[0][0];
      return !counted.empty() && counted[0][0] == std::to_string(
                                                     uploads * per_upload)
             && marks[0][0] == "0";
    },
    60s, 250ms);
  INFO(last);
  CHECK(rolled);
  // Merged, not just counted: min, max and the mean of 0..59.
  auto r = db.query("SELECT min, max, avg FROM rollups WHERE device_key = "
                    + key_sql);
  REQUIRE(r.size() == 1);
  CHECK(std::stod(r[0][0]) == 0);
  CHECK(std::stod(r[0][1]) == uploads * per_upload - 1);
  CHECK(std::stod(r[0][2]) == Approx((uploads * per_upload - 1) / 2.0));
  // The API shows the same hour.
  auto a = f.n.get("/api/v1/devices/" + f.dev.id + "/analysis", f.viewer.token);
  TROUPE_REQUIRE_STATUS(a, 200);
  INFO(a.body.dump());
  CHECK(a.body.dump().find("\"count\":" + std::to_string(uploads * per_upload))
        != std::string::npos);
}

TEST_CASE("buckets of whole hours come from rollups and agree with the raw "
          "points, before and after the pass merges them",
          "[analysis][rollups][history]") {
  fixture f;
  constexpr int64_t hour = 3'600'000, minute = 60'000;
  auto h0 = (now_ms() / hour - 4) * hour;
  // Two points late in the hour before h0, six in each of three hours.
  json pts = json::array();
  std::map<int64_t, std::vector<double>> want; // bucket start -> values
  auto add = [&](int64_t ts, double v, int64_t step) {
    pts.push_back({{"metric", "level"}, {"value", v}, {"ts", ts}});
    want[ts / step * step].push_back(v);
  };
  auto upload = [&](int64_t step) {
    pts = json::array();
    want.clear();
    add(h0 - 10 * minute, -3.5, step);
    add(h0 - 5 * minute, 7.25, step);
    for (int h = 0; h < 3; ++h)
      for (int i = 0; i < 6; ++i)
        add(h0 + h * hour + (5 + 10 * i) * minute, h * 10 + i * 1.5, step);
  };
  auto check = [&](int64_t step, const std::string& what) {
    upload(step);
    auto from = h0 - 30 * minute, to = h0 + 3 * hour - 1;
    auto r = f.n.get("/api/v1/devices/" + f.dev.id
                       + "/telemetry?metric=level&from=" + std::to_string(from)
                       + "&to=" + std::to_string(to) + "&step="
                       + std::to_string(step / minute) + "m",
                     f.viewer.token);
    TROUPE_REQUIRE_STATUS(r, 200);
    INFO(what << ": " << r.body.dump());
    auto& got = r.body["points"];
    REQUIRE(got.size() == want.size());
    size_t i = 0;
    for (auto& [start, vals] : want) {
      auto& b = got[i++];
      double sum = 0;
      for (auto v : vals)
        sum += v;
      CHECK(b[0].get<int64_t>() == start);
      CHECK(b[1].get<int64_t>() == static_cast<int64_t>(vals.size()));
      CHECK(b[2].get<double>() == *std::min_element(vals.begin(), vals.end()));
      CHECK(b[3].get<double>() == *std::max_element(vals.begin(), vals.end()));
      CHECK(b[4].get<double>() == Approx(sum / vals.size()));
    }
  };
  upload(hour);
  TROUPE_REQUIRE_STATUS(post_telemetry(f.n, f.dev.token, {{"points", pts}}),
                        202);
  // Right away (deltas maybe not merged), by hours, by two hours, and by
  // 30 minutes (raw points only): the same figures.
  check(hour, "1h, at once");
  check(2 * hour, "2h, at once");
  check(30 * minute, "30m (raw)");
  auto& db = *f.n.db();
  auto key_sql = "(SELECT key FROM devices WHERE id = '" + f.dev.id + "')";
  REQUIRE(eventually(
    [&] {
      return db.query("SELECT count(*) FROM rollup_deltas WHERE device_key = "
                      + key_sql)[0][0]
             == "0";
    },
    60s, 250ms));
  check(hour, "1h, merged");
  check(2 * hour, "2h, merged");
}

TEST_CASE("silence: a device's own window counts for how often it is "
          "seen",
          "[alerts]") {
  // The node's window is long (15 min); the device's own is 3 s, set by an
  // admin while the device is in memory. Polling, it must stay quiet.
  node_options opts;
  opts.settings = {{"analysis.interval_ms", "500"}};
  node n{opts};
  auto tenant = make_tenant(n);
  auto viewer = make_user(n, "viewer", tenant);
  auto polling = make_device(n, tenant);
  auto quiet = make_device(n, tenant);
  for (auto* d : {&polling, &quiet}) {
    d->token = n.device_login(d->id, d->secret);
    TROUPE_REQUIRE_STATUS(n.patch("/api/v1/admin/devices/" + d->id,
                                  json{{"silence_s", 3}}, n.admin_token()),
                          200);
  }
  CHECK(poll_beside_quiet(n, viewer.token, polling, quiet.id));
}

TEST_CASE("silence: a device that keeps polling stays quiet; one that "
          "stops opens an alert that closes when it is back",
          "[alerts]") {
  // Its own node: a 3 s silence window. A device that only polls is seen
  // in PostgreSQL (where the silence pass looks) often enough for any
  // window, not only every quarter of the online window (75 s).
  node_options opts;
  opts.settings = {{"analysis.interval_ms", "500"},
                   {"analysis.silence_s", "3"}};
  node n{opts};
  auto tenant = make_tenant(n);
  auto viewer = make_user(n, "viewer", tenant);
  auto polling = make_device(n, tenant);
  auto quiet = make_device(n, tenant);
  CHECK(poll_beside_quiet(n, viewer.token, polling, quiet.id));
  CHECK(eventually(
    [&] {
      poll_once(n, quiet);
      return !silence_open(n, viewer.token, quiet.id);
    },
    15s, 250ms));
}
