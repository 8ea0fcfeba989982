// Write shards (storage.shards): the node's database is the catalog and
// data shard 0, a second database is data shard 1. Devices are spread over
// both by a stable hash; each device's telemetry, latest values, commands,
// rollups and alerts live on its shard only; every API.md endpoint works
// for devices on either; a shard that is down fails or spools only its own
// devices, and nothing acknowledged is lost when it is back.

#include "tests/integration/harness.hpp"

#include <map>
#include <set>

#include <catch2/catch.hpp>

using namespace troupe::test;

namespace {

/// A catalog database, a data shard database, and a node on both.
struct sharded {
  std::shared_ptr<database> catalog = std::make_shared<database>();
  std::shared_ptr<database> shard = std::make_shared<database>();
  std::unique_ptr<node> n;

  sharded() {
    node_options opts;
    opts.settings.emplace_back("storage.shards", shard->url());
    opts.settings.emplace_back("analysis.interval_ms", "1000");
    n = std::make_unique<node>(catalog, opts);
  }

  /// The data shard of each device, as the catalog records it.
  std::map<std::string, int> placement() const {
    std::map<std::string, int> out;
    for (auto& row : catalog->query("SELECT id, data_shard FROM devices"))
      out[row[0]] = std::stoi(row[1]);
    return out;
  }

  const database& db_of(int data_shard) const {
    return data_shard == 0 ? *catalog : *shard;
  }

  std::string key_of(const std::string& id) const {
    auto rows = catalog->query("SELECT key FROM devices WHERE id = '" + id
                               + "'");
    return rows.empty() ? "" : rows[0][0];
  }
};

int64_t count(const database& db, const std::string& sql) {
  auto rows = db.query(sql);
  return rows.empty() ? -1 : std::stoll(rows[0][0]);
}

std::vector<std::string> ids(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back(prefix + "-" + std::to_string(i));
  return out;
}

/// All devices the list shows, page by page.
std::vector<std::string> list_all(const node& n, const std::string& token,
                                  const std::string& query) {
  std::vector<std::string> out;
  std::string cursor;
  for (int page = 0; page < 100; ++page) {
    auto r = n.get("/api/v1/devices?limit=97" + query
                     + (cursor.empty() ? "" : "&cursor=" + cursor),
                   token);
    if (r.status != 200)
      n.fail("device list failed", r);
    for (auto& d : list_items(r))
      out.push_back(d["id"].get<std::string>());
    if (!r.body.contains("next_cursor") || r.body["next_cursor"].is_null())
      break;
    cursor = r.body["next_cursor"].get<std::string>();
  }
  return out;
}

} // namespace

TEST_CASE("shards: 1,000 devices spread over two shards, each with its data "
          "on its own shard only",
          "[shards]") {
  sharded s;
  auto& n = *s.n;
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto prefix = unique_id("sd");
  auto creds = n.register_devices(admin, ids(prefix, 1000), tenant);
  auto placed = s.placement();
  REQUIRE(placed.size() == 1000);
  std::map<int, int> per_shard;
  for (auto& [id, sh] : placed)
    ++per_shard[sh];
  INFO("shard 0: " << per_shard[0] << ", shard 1: " << per_shard[1]);
  CHECK(per_shard.size() == 2);
  CHECK(per_shard[0] >= 400);
  CHECK(per_shard[0] <= 600);
  // The shard holds copies of exactly its own devices.
  CHECK(count(*s.shard, "SELECT count(*) FROM devices") == per_shard[1]);
  CHECK(count(*s.shard, "SELECT count(*) FROM devices WHERE data_shard <> 1")
        == 0);

  // The list merges both shards, in id order, page by page.
  auto all = list_all(n, admin, "");
  CHECK(all.size() == 1000);
  CHECK(std::is_sorted(all.begin(), all.end()));
  CHECK(std::set<std::string>(all.begin(), all.end()).size() == 1000);

  // One device on each shard goes through every endpoint.
  std::map<int, device_credentials> dev;
  for (auto& c : creds)
    dev.emplace(placed[c.id], c);
  REQUIRE(dev.size() == 2);
  auto op = make_user(n, "operator", tenant);
  auto rule = n.post("/api/v1/rules",
                     {{"metric", "temp"}, {"op", ">"}, {"value", 50},
                      {"for_s", 0}},
                     op.token);
  TROUPE_REQUIRE_STATUS(rule, 201);
  for (auto& [sh, c] : dev) {
    INFO("device " << c.id << " on shard " << sh);
    auto token = n.device_login(c.id, c.secret);
    auto now = now_ms();
    json pts = json::array();
    for (int i = 0; i < 3; ++i)
      pts.push_back({{"metric", "temp"}, {"value", 60 + i},
                     {"ts", now - 3000 + i * 1000}});
    auto up = post_telemetry(n, token, {{"batch_id", 1}, {"points", pts}});
    TROUPE_CHECK_STATUS(up, 202);
    auto again = post_telemetry(n, token, {{"batch_id", 1}, {"points", pts}});
    TROUPE_CHECK_STATUS(again, 200);
    CHECK(again.body.value("duplicate", false));
    auto hist = history(n, op.token, c.id, "temp");
    CHECK(hist.size() == 3);
    auto detail = n.get("/api/v1/devices/" + c.id, op.token);
    TROUPE_CHECK_STATUS(detail, 200);
    CHECK(detail.body["latest"]["temp"]["value"] == 62);
    auto buckets = n.get("/api/v1/devices/" + c.id
                           + "/telemetry?metric=temp&step=1h",
                         op.token);
    TROUPE_CHECK_STATUS(buckets, 200);

    // The rows are on the device's shard, and only there.
    auto key = s.key_of(c.id);
    auto& home = s.db_of(sh);
    auto& other = s.db_of(1 - sh);
    CHECK(count(home, "SELECT count(*) FROM telemetry WHERE device_key = "
                        + key)
          == 3);
    CHECK(count(other, "SELECT count(*) FROM telemetry WHERE device_key = "
                         + key)
          == 0);
    CHECK(count(home, "SELECT count(*) FROM latest WHERE device_key = " + key)
          == 1);
    CHECK(count(other, "SELECT count(*) FROM latest WHERE device_key = "
                         + key)
          == 0);
    // The batch mark is on the home shard, with the latest values.
    CHECK(count(home, "SELECT max(batch_hwm) FROM latest WHERE device_key = "
                        + key)
          == 1);

    // Commands: posted, long-polled, finished, listed.
    auto cmd = n.post("/api/v1/devices/" + c.id + "/commands",
                      {{"name", "reboot"}, {"args", json::object()}},
                      op.token);
    TROUPE_REQUIRE_STATUS(cmd, 201);
    auto cid = cmd.body["id"].get<std::string>();
    auto polled = n.get("/api/v1/device/commands?wait=5", token);
    TROUPE_REQUIRE_STATUS(polled, 200);
    REQUIRE(polled.body["commands"].size() == 1);
    CHECK(polled.body["commands"][0]["id"] == cid);
    auto fin = n.post("/api/v1/device/commands/" + cid + "/result",
                      {{"status", "done"}, {"result", {{"ok", true}}}},
                      token);
    TROUPE_CHECK_STATUS(fin, 200);
    auto listed = n.get("/api/v1/devices/" + c.id + "/commands", op.token);
    TROUPE_REQUIRE_STATUS(listed, 200);
    auto items = list_items(listed);
    REQUIRE(items.size() == 1);
    CHECK(items[0]["status"] == "done");
    CHECK(count(home, "SELECT count(*) FROM commands WHERE id = '" + cid
                        + "'")
          == 1);
    CHECK(count(other, "SELECT count(*) FROM commands WHERE id = '" + cid
                         + "'")
          == 0);

    // Analysis: rollups of its shard.
    json body;
    CHECK(eventually(
      [&] {
        auto r = n.get("/api/v1/devices/" + c.id + "/analysis", op.token);
        body = r.body;
        return r.status == 200 && r.raw.find("temp") != std::string::npos;
      },
      60s, 500ms));

    // The list finds it by id (a substring of id or name), and online.
    auto found = list_all(n, op.token, "&q=" + c.id);
    CHECK(std::find(found.begin(), found.end(), c.id) != found.end());
    for (auto& f : found)
      CHECK(f.find(c.id) != std::string::npos);
    auto online = list_all(n, op.token, "&online=true");
    CHECK(std::find(online.begin(), online.end(), c.id) != online.end());
  }

  // The tenant's rule opened an alert for each device, each on its shard.
  json alerts;
  CHECK(eventually(
    [&] {
      auto r = n.get("/api/v1/alerts?state=open", op.token);
      if (r.status != 200)
        return false;
      alerts = list_items(r);
      return alerts.size() >= 2;
    },
    60s, 500ms));
  INFO(alerts.dump());
  REQUIRE(alerts.size() == 2);
  for (auto& a : alerts) {
    auto id = a["id"].get<std::string>();
    auto sh = placed[a["device_id"].get<std::string>()];
    CHECK(count(s.db_of(sh), "SELECT count(*) FROM alerts WHERE id = '" + id
                               + "'")
          == 1);
    TROUPE_CHECK_STATUS(n.post("/api/v1/alerts/" + id + "/close",
                               json::object(), op.token),
                        200);
    TROUPE_CHECK_ERROR(n.post("/api/v1/alerts/" + id + "/close",
                              json::object(), op.token),
                       409);
  }
  TROUPE_CHECK_ERROR(n.post("/api/v1/alerts/no-such-alert/close",
                            json::object(), op.token),
                     404);

  // A change of name and silence window, and a delete, reach the shard's
  // copy (the silence pass of that shard reads the window there).
  auto& far = dev.at(1);
  REQUIRE(placed[far.id] == 1);
  auto copy_silence = [&] {
    return s.shard->query("SELECT coalesce(silence_s, 0) FROM devices"
                          " WHERE id = '" + far.id + "'")[0][0];
  };
  auto renamed = n.patch("/api/v1/admin/devices/" + far.id,
                         {{"name", "Renamed far"}, {"silence_s", 7}}, admin);
  TROUPE_CHECK_STATUS(renamed, 200);
  CHECK(renamed.body["silence_s"] == 7);
  CHECK(copy_silence() == "7");
  auto r = n.get("/api/v1/devices?q=Renamed", admin);
  auto items = list_items(r);
  REQUIRE(items.size() == 1);
  CHECK(items[0]["id"] == far.id);
  CHECK(items[0]["silence_s"] == 7);
  // A copy made again from the catalog (as a load after a restore does)
  // keeps the window.
  s.shard->query("UPDATE devices SET silence_s = NULL WHERE id = '" + far.id
                 + "'");
  n.restart();
  TROUPE_CHECK_STATUS(n.get("/api/v1/devices/" + far.id, admin), 200);
  CHECK(copy_silence() == "7");
  TROUPE_CHECK_STATUS(n.del("/api/v1/admin/devices/" + far.id, admin), 204);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + far.id, admin), 404);
  CHECK(count(*s.shard, "SELECT count(*) FROM devices WHERE id = '" + far.id
                          + "'")
        == 0);
  CHECK(list_all(n, admin, "").size() == 999);

  // The cluster view names both data shards.
  auto cluster = n.get("/api/v1/cluster", admin);
  TROUPE_REQUIRE_STATUS(cluster, 200);
  INFO(cluster.body.dump());
  REQUIRE(cluster.body["database"]["shards"].size() == 2);
  CHECK(cluster.body["database"]["shards"][1]["up"] == true);
}

TEST_CASE("shards: a shard that is down fails or spools only its own "
          "devices, and nothing acknowledged is lost",
          "[shards]") {
  sharded s;
  auto& n = *s.n;
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto creds = n.register_devices(admin, ids(unique_id("sx"), 40), tenant);
  auto placed = s.placement();
  struct dev_state {
    device_credentials c;
    int shard = 0;
    std::string token;
    int64_t acked = 0;
  };
  std::vector<dev_state> devs;
  for (auto& c : creds)
    devs.push_back({c, placed[c.id], n.device_login(c.id, c.secret), 0});
  int64_t batch = 0;
  // A device left out of the rounds (telemetry answers carry its commands).
  std::string quiet;
  auto upload_round = [&](std::map<int, std::map<int, int>>& statuses) {
    ++batch;
    for (auto& d : devs) {
      if (d.c.id == quiet)
        continue;
      json pts = json::array();
      for (int i = 0; i < 5; ++i)
        pts.push_back({{"metric", "m"}, {"value", batch * 10 + i},
                       {"ts", now_ms() - 10'000 + batch * 50 + i}});
      auto r = post_telemetry(n, d.token, {{"batch_id", batch},
                                           {"points", pts}});
      ++statuses[d.shard][r.status];
      if (r.status == 202)
        d.acked += 5;
    }
  };
  std::map<int, std::map<int, int>> before;
  upload_round(before);
  CHECK(before[0][202] + before[1][202] == 40);
  // A pending command of a device on shard 1, to be cancelled while the
  // shard is down; the device stays quiet until then.
  auto& victim = *std::find_if(devs.begin(), devs.end(),
                               [](auto& d) { return d.shard == 1; });
  quiet = victim.c.id;
  auto wipe = n.post("/api/v1/devices/" + victim.c.id + "/commands",
                     {{"name", "wipe"}, {"args", json::object()}}, op.token);
  TROUPE_REQUIRE_STATUS(wipe, 201);
  auto wipe_id = wipe.body["id"].get<std::string>();
  auto cancel_wipe = [&] {
    return n.post("/api/v1/devices/" + victim.c.id + "/commands/" + wipe_id
                    + "/cancel",
                  json::object(), op.token);
  };
  auto polled_wipe = [&] {
    auto r = n.get("/api/v1/device/commands", victim.token);
    INFO(r.describe());
    CHECK(r.status == 200);
    for (auto& cmd : r.body.value("commands", json::array()))
      if (cmd.value("id", "") == wipe_id)
        return true;
    return false;
  };

  // Shard 1 goes away: no connection is allowed to its database.
  auto shard_name = s.shard->name();
  s.catalog->query("ALTER DATABASE \"" + shard_name
                   + "\" WITH ALLOW_CONNECTIONS false");
  s.catalog->query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = '" + shard_name + "'");
  CHECK(eventually(
    [&] {
      return metric(n, "troupe_database_up{shard=\"1\"}") == 0.0;
    },
    15s, 200ms));
  std::map<int, std::map<int, int>> during;
  for (int round = 0; round < 3; ++round)
    upload_round(during);
  auto shard1_devices = static_cast<int>(std::count_if(
    devs.begin(), devs.end(), [](auto& d) { return d.shard == 1; }));
  INFO("shard 0: 202 x " << during[0][202] << ", shard 1: 202 x "
                         << during[1][202] << ", 503 x " << during[1][503]);
  // Devices of shard 0 are unaffected; those of shard 1 are spooled (202)
  // or refused (503), nothing else.
  CHECK(during[0][202] == static_cast<int>(3 * std::count_if(
                            devs.begin(), devs.end(),
                            [](auto& d) { return d.shard == 0; })));
  CHECK(during[1][202] + during[1][503] == 3 * (shard1_devices - 1));
  // What shard 1's devices had acknowledged went to its importers' spools.
  CHECK(metric_sum(n, "troupe_spool_records_total{importer=\"s1-")
        == during[1][202]);
  auto on = [&](int sh) {
    return *std::find_if(devs.begin(), devs.end(),
                         [&](auto& d) { return d.shard == sh; });
  };
  // Commands: a device of shard 1 answers 503 with Retry-After.
  auto refused = n.post("/api/v1/devices/" + on(1).c.id + "/commands",
                        {{"name", "reboot"}, {"args", json::object()}},
                        op.token);
  TROUPE_CHECK_ERROR(refused, 503);
  CHECK(refused.has_header("Retry-After"));
  TROUPE_CHECK_STATUS(n.post("/api/v1/devices/" + on(0).c.id + "/commands",
                             {{"name", "reboot"}, {"args", json::object()}},
                             op.token),
                      201);
  // One command to every device of a search: shard 1's fail alone (503
  // each); with the online filter the selection itself cannot be made.
  auto everyone = n.post("/api/v1/commands",
                         {{"filter", {{"q", "sx"}}}, {"name", "sweep"}},
                         op.token);
  TROUPE_REQUIRE_STATUS(everyone, 200);
  INFO(everyone.body.dump());
  CHECK(everyone.body["matched"] == 40);
  CHECK(everyone.body["failed"] == shard1_devices);
  CHECK(everyone.body["sent"] == 40 - shard1_devices);
  for (auto& item : everyone.body["items"]) {
    CHECK(item["status"] == 503);
    CHECK(placed[item["device_id"].get<std::string>()] == 1);
  }
  TROUPE_CHECK_ERROR(n.post("/api/v1/commands",
                            {{"filter", {{"q", "sx"}, {"online", true}}},
                             {"name", "sweep"}},
                            op.token),
                     503);
  TROUPE_CHECK_STATUS(n.get("/readyz"), 200);
  // A cancel whose write cannot reach the shard is refused, and the
  // command is held back all the same: the device does not get it.
  auto refused_cancel = cancel_wipe();
  TROUPE_CHECK_ERROR(refused_cancel, 503);
  CHECK(refused_cancel.has_header("Retry-After"));
  CHECK(refused_cancel.body["error"]["message"].get<std::string>().find(
          "again")
        != std::string::npos);
  CHECK(!polled_wipe());
  quiet.clear(); // nor in its telemetry answers from now on
  // An admin change resets the device's actor meanwhile (the catalog is
  // up): its stop waits for the unsettled cancel instead of dropping it,
  // so the next copy does not load the command as pending.
  auto rotated = n.request("POST",
                           "/api/v1/admin/devices/" + victim.c.id
                             + "/rotate-secret",
                           "", "application/json", {}, admin);
  TROUPE_REQUIRE_STATUS(rotated, 200);
  victim.c.secret = rotated.body["secret"].get<std::string>();

  // Back: the spool drains, and every acknowledged point is stored once.
  s.catalog->query("ALTER DATABASE \"" + shard_name
                   + "\" WITH ALLOW_CONNECTIONS true");
  // Its new secret logs in once the node serves the shard again.
  REQUIRE(eventually(
    [&] {
      auto r = n.post("/api/v1/device/login", {{"device_id", victim.c.id},
                                               {"secret", victim.c.secret}});
      if (r.status != 200)
        return false;
      victim.token = r.body["token"].get<std::string>();
      return true;
    },
    30s, 250ms));
  for (auto& d : devs) {
    INFO("device " << d.c.id << " on shard " << d.shard);
    auto key = s.key_of(d.c.id);
    auto& home = s.db_of(d.shard);
    int64_t stored = -1;
    eventually(
      [&] {
        stored = count(home, "SELECT count(*) FROM telemetry WHERE "
                             "device_key = " + key);
        return stored >= d.acked;
      },
      60s, 250ms);
    CHECK(stored >= d.acked);
    CHECK(count(home, "SELECT count(*) FROM (SELECT ts FROM telemetry WHERE "
                      "device_key = " + key
                        + " GROUP BY ts HAVING count(*) > 1) x")
          == 0);
    CHECK(count(s.db_of(1 - d.shard),
                "SELECT count(*) FROM telemetry WHERE device_key = " + key)
          == 0);
  }
  std::map<int, std::map<int, int>> after;
  CHECK(eventually(
    [&] {
      after.clear();
      upload_round(after);
      return after[0][202] + after[1][202] == 40;
    },
    30s, 500ms));
  // The cancel that was refused lands by itself once the shard is back
  // (the device actor writes it again), and the command is never
  // delivered; the operator's own retry then answers the same.
  CHECK(eventually(
    [&] {
      return s.shard->query("SELECT status FROM commands WHERE id = '"
                            + wipe_id + "'")[0][0]
             == "cancelled";
    },
    30s, 250ms));
  auto cancelled = cancel_wipe();
  TROUPE_CHECK_STATUS(cancelled, 200);
  CHECK(cancelled.body["status"] == "cancelled");
  CHECK(!polled_wipe());
  CHECK(s.shard->query("SELECT status FROM commands WHERE id = '" + wipe_id
                       + "'")[0][0]
        == "cancelled");
}
