// User side of API.md: login, cookie and bearer sessions, /me, logout, idle
// timeout; the device list (q, online, limit, cursor), device detail, raw
// and bucketed history; tenant isolation.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

using namespace troupe::test;

namespace {

constexpr int64_t minute_ms = 60'000;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t");
  auto e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

/// The Set-Cookie header for troupe_session, split at ';' and trimmed.
std::vector<std::string> session_cookie(const response& r) {
  auto range = r.headers.equal_range("Set-Cookie");
  for (auto i = range.first; i != range.second; ++i) {
    if (i->second.rfind("troupe_session=", 0) != 0)
      continue;
    std::vector<std::string> parts;
    std::string part;
    for (char c : i->second) {
      if (c == ';') {
        parts.push_back(trim(part));
        part.clear();
      } else {
        part += c;
      }
    }
    parts.push_back(trim(part));
    return parts;
  }
  return {};
}

bool has_attribute(const std::vector<std::string>& parts,
                   const std::string& attr) {
  for (size_t i = 1; i < parts.size(); ++i)
    if (lower(parts[i]) == lower(attr))
      return true;
  return false;
}

headers cookie(const std::string& token) {
  return {{"Cookie", "troupe_session=" + token}};
}

response post_points(const node& n, const std::string& token,
                     const std::string& metric,
                     const std::vector<std::pair<int64_t, double>>& points) {
  json pts = json::array();
  for (auto& [ts, v] : points)
    pts.push_back({{"metric", metric}, {"value", v}, {"ts", ts}});
  auto r = post_telemetry(n, token, {{"points", pts}});
  if (r.status != 202)
    n.fail("posting telemetry failed", r);
  return r;
}

/// All items of a paginated device list, following next_cursor.
std::vector<json> all_pages(const node& n, const std::string& token,
                            const std::string& query, size_t* pages) {
  std::vector<json> out;
  std::string cursor;
  *pages = 0;
  for (int guard = 0; guard < 100; ++guard) {
    auto path = "/api/v1/devices?" + query
                + (cursor.empty() ? "" : "&cursor=" + url_encode(cursor));
    auto r = n.get(path, token);
    if (r.status != 200)
      n.fail("listing devices failed", r);
    ++*pages;
    for (auto& i : list_items(r))
      out.push_back(i);
    auto& next = r.body["next_cursor"];
    if (next.is_null())
      return out;
    if (!next.is_string())
      n.fail("next_cursor is neither a string nor null", r);
    cursor = next.get<std::string>();
  }
  throw std::runtime_error("device list pagination does not end");
}

} // namespace

TEST_CASE("user login sets a session cookie; cookie and bearer both work",
          "[user][session]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto user = unique_id("op");
  n.create_user(n.admin_token(), user, "Secret-pw-1", "operator", tenant);
  auto r = n.post("/api/v1/login",
                  {{"username", user}, {"password", "Secret-pw-1"}});
  INFO(r.describe());
  REQUIRE(r.status == 200);
  auto token = r.body.value("token", "");
  REQUIRE_FALSE(token.empty());
  CHECK(r.body["user"]["username"] == user);
  CHECK(r.body["user"]["role"] == "operator");
  CHECK(r.body["user"]["tenant"] == tenant);

  auto parts = session_cookie(r);
  INFO("Set-Cookie: " << r.header("Set-Cookie"));
  REQUIRE_FALSE(parts.empty());
  CHECK(parts[0] == "troupe_session=" + token);
  CHECK(has_attribute(parts, "HttpOnly"));
  CHECK(has_attribute(parts, "SameSite=Strict"));
  CHECK(has_attribute(parts, "Path=/"));

  auto by_cookie = n.get("/api/v1/me", "", cookie(token));
  INFO(by_cookie.describe());
  CHECK(by_cookie.status == 200);
  CHECK(by_cookie.body["username"] == user);
  CHECK(by_cookie.body["role"] == "operator");
  CHECK(by_cookie.body["tenant"] == tenant);
  auto by_bearer = n.get("/api/v1/me", token);
  CHECK(by_bearer.status == 200);
  CHECK(by_bearer.body == by_cookie.body);

  // The admin's /me.
  auto admin_me = n.get("/api/v1/me", n.admin_token());
  TROUPE_CHECK_STATUS(admin_me, 200);
  CHECK(admin_me.body["username"] == "admin");
  CHECK(admin_me.body["role"] == "admin");
}

TEST_CASE("user login: same 401 for a wrong username and a wrong password",
          "[user][errors]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto u = make_user(n, "viewer", tenant);
  auto wrong_pw = n.post("/api/v1/login",
                         {{"username", u.username}, {"password", "nope"}});
  auto wrong_user = n.post("/api/v1/login", {{"username", unique_id("nobody")},
                                             {"password", u.password}});
  TROUPE_CHECK_ERROR(wrong_pw, 401);
  TROUPE_CHECK_ERROR(wrong_user, 401);
  CHECK(wrong_pw.body == wrong_user.body);
  CHECK(session_cookie(wrong_pw).empty());
  // Malformed.
  TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/login", "{\"username\":"), 400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/login", {{"username", u.username}}), 400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/login",
                            {{"username", u.username}, {"password", 123}}),
                     400);
  TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/login",
                               json{{"username", u.username},
                                    {"password", u.password}}
                                 .dump(),
                               "application/x-www-form-urlencoded"),
                     415);
  TROUPE_CHECK_ERROR(n.get("/api/v1/login"), 405);
}

TEST_CASE("logout ends the session", "[user][session]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto u = make_user(n, "operator", tenant);
  auto other = n.login(u.username, u.password); // a second, separate session
  TROUPE_REQUIRE_STATUS(n.get("/api/v1/me", u.token), 200);
  auto out = n.request("POST", "/api/v1/logout", "", "application/json", {},
                       u.token);
  INFO(out.describe());
  CHECK(out.status >= 200);
  CHECK(out.status < 300);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", u.token), 401);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", "", cookie(u.token)), 401);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices", u.token), 401);
  // Only that session ended.
  TROUPE_CHECK_STATUS(n.get("/api/v1/me", other), 200);
  // Logging out by cookie works too.
  auto out2 = n.request("POST", "/api/v1/logout", "", "application/json",
                        cookie(other));
  CHECK(out2.status >= 200);
  CHECK(out2.status < 300);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", other), 401);
}

TEST_CASE("no or bad credentials are 401", "[user][errors]") {
  auto& n = shared_node();
  TROUPE_CHECK_ERROR(n.get("/api/v1/me"), 401);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", "garbage-token"), 401);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", "", cookie("garbage-token")), 401);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices"), 401);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/anything"), 401);
  TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/logout", ""), 401);
  // A device token is not a user session.
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto r = n.get("/api/v1/me", dev.token);
  INFO(r.describe());
  CHECK((r.status == 401 || r.status == 403));
}

TEST_CASE("sessions end after the idle timeout", "[user][session][slow]") {
  // 3 s: two logins (slow salted hashes) fit in it on a loaded CI machine.
  node n{node_options{{{"actors.session_idle_s", "3"}}}};
  auto busy = n.login_admin();
  auto idle = n.login_admin();
  TROUPE_REQUIRE_STATUS(n.get("/api/v1/me", busy), 200);
  TROUPE_REQUIRE_STATUS(n.get("/api/v1/me", idle), 200);
  // Keep `busy` in use for over twice the idle time; leave `idle` alone.
  auto until = clock_type::now() + 7000ms;
  int busy_failures = 0;
  while (clock_type::now() < until) {
    if (n.get("/api/v1/me", busy).status != 200)
      ++busy_failures;
    std::this_thread::sleep_for(400ms);
  }
  CHECK(busy_failures == 0);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", idle), 401);
  TROUPE_CHECK_STATUS(n.get("/api/v1/me", busy), 200);
}

TEST_CASE("device list: q, online, limit, cursor and tenants",
          "[user][devices]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto other_tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto prefix = unique_id("lst");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(prefix + "-d" + std::to_string(i));
  auto creds = n.register_devices(n.admin_token(), ids, tenant);
  auto foreign = prefix + "-zz";
  n.register_device(n.admin_token(), foreign, other_tenant);

  // ids[0] reports in, and is therefore online.
  auto token0 = n.device_login(creds[0].id, creds[0].secret);
  auto ts = now_ms() - 1000;
  post_points(n, token0, "temp", {{ts, 21.5}});

  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  auto list = [&](const std::string& token, const std::string& query) {
    auto r = n.get("/api/v1/devices?" + query, token);
    if (r.status != 200)
      n.fail("device list failed", r);
    return list_items(r);
  };

  SECTION("the operator sees its tenant's devices only") {
    auto items = list(op.token, "q=" + url_encode(prefix));
    CHECK(sorted(ids_of(items)) == ids);
    for (auto& item : items) {
      INFO(item.dump());
      CHECK(item["name"].is_string());
      CHECK(item["tenant"] == tenant);
      CHECK(item["online"].is_boolean());
      CHECK(item.contains("last_seen_ms"));
      CHECK(item["latest"].is_object());
    }
    // The admin sees every tenant.
    auto all = list(n.admin_token(), "q=" + url_encode(prefix));
    auto all_ids = ids_of(all);
    CHECK(all_ids.size() == 6);
    CHECK(std::count(all_ids.begin(), all_ids.end(), foreign) == 1);
  }

  SECTION("latest values and online state") {
    json item;
    CHECK(eventually(
      [&] {
        auto items = list(op.token, "q=" + url_encode(creds[0].id));
        for (auto& i : items)
          if (i["id"] == creds[0].id)
            item = i;
        return item.is_object() && item["latest"].contains("temp");
      },
      10s));
    INFO(item.dump());
    CHECK(item["online"] == true);
    CHECK(item["last_seen_ms"].is_number());
    CHECK(item["latest"]["temp"]["value"] == 21.5);
    CHECK(item["latest"]["temp"]["ts"] == ts);

    auto online = list(op.token, "q=" + url_encode(prefix) + "&online=true");
    CHECK(ids_of(online) == std::vector<std::string>{creds[0].id});
    auto offline = list(op.token, "q=" + url_encode(prefix) + "&online=false");
    CHECK(sorted(ids_of(offline))
          == std::vector<std::string>(ids.begin() + 1, ids.end()));
    for (auto& i : offline)
      CHECK(i["online"] == false);
  }

  SECTION("pagination with limit and cursor") {
    size_t pages = 0;
    auto items = all_pages(n, op.token,
                           "q=" + url_encode(prefix) + "&limit=2", &pages);
    CHECK(pages == 3);
    auto got = ids_of(items);
    CHECK(std::set<std::string>(got.begin(), got.end()).size() == got.size());
    CHECK(sorted(got) == ids);
    // limit larger than the result: one page, next_cursor null.
    auto r = n.get("/api/v1/devices?q=" + url_encode(prefix) + "&limit=10",
                   op.token);
    TROUPE_REQUIRE_STATUS(r, 200);
    CHECK(list_items(r).size() == 5);
    CHECK(r.body["next_cursor"].is_null());
    // Exactly one page worth: the last page still ends with null.
    size_t pages5 = 0;
    auto items5 = all_pages(n, op.token,
                            "q=" + url_encode(prefix) + "&limit=5", &pages5);
    CHECK(items5.size() == 5);
    CHECK(pages5 <= 2);
  }

  SECTION("bad parameters") {
    TROUPE_CHECK_ERROR(n.get("/api/v1/devices?limit=abc", op.token), 400);
    TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/devices", "{}",
                                 "application/json", {}, op.token),
                       405);
  }
}

TEST_CASE("device detail: latest, pending_commands, metrics",
          "[user][devices]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto viewer = make_user(n, "viewer", tenant);
  auto dev = make_device(n, tenant);
  auto ts = now_ms() - 2000;
  auto r = post_telemetry(n, dev.token,
                          {{"ts", ts}, {"values", {{"temp", 20.25}, {"hum", 41}}}});
  TROUPE_REQUIRE_STATUS(r, 202);
  for (auto name : {"a", "b"}) {
    auto c = n.post("/api/v1/devices/" + dev.id + "/commands",
                    {{"name", name}, {"args", json::object()}, {"ttl_s", 600}},
                    op.token);
    TROUPE_REQUIRE_STATUS(c, 201);
  }
  json detail;
  CHECK(eventually(
    [&] {
      auto d = n.get("/api/v1/devices/" + dev.id, op.token);
      detail = d.body;
      return d.status == 200 && detail.value("pending_commands", -1) == 2
             && detail["latest"].is_object()
             && detail["latest"].contains("hum");
    },
    10s));
  INFO(detail.dump());
  CHECK(detail["id"] == dev.id);
  CHECK(detail["name"].is_string());
  CHECK(detail["tenant"] == tenant);
  CHECK(detail["online"] == true);
  CHECK(detail["last_seen_ms"].is_number());
  CHECK(detail["latest"]["temp"]["value"] == 20.25);
  CHECK(detail["latest"]["temp"]["ts"] == ts);
  CHECK(detail["latest"]["hum"]["value"] == 41);
  CHECK(detail["pending_commands"] == 2);
  REQUIRE(detail["metrics"].is_array());
  auto metrics = detail["metrics"].get<std::vector<std::string>>();
  std::sort(metrics.begin(), metrics.end());
  CHECK(metrics == std::vector<std::string>{"hum", "temp"});

  // A viewer of the tenant reads the same; other tenants and unknown ids 404.
  TROUPE_CHECK_STATUS(n.get("/api/v1/devices/" + dev.id, viewer.token), 200);
  auto stranger = make_user(n, "operator", make_tenant(n));
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id, stranger.token), 404);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + unique_id("nodev"), op.token),
                     404);
  // A registered device that never reported.
  auto quiet = unique_id("quiet");
  n.register_device(n.admin_token(), quiet, tenant);
  auto q = n.get("/api/v1/devices/" + quiet, op.token);
  TROUPE_REQUIRE_STATUS(q, 200);
  CHECK(q.body["online"] == false);
  CHECK(q.body["pending_commands"] == 0);
  CHECK(q.body["metrics"] == json::array());
}

TEST_CASE("raw history: newest last, limit, from and to", "[user][history]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto viewer = make_user(n, "viewer", tenant);
  auto dev = make_device(n, tenant);
  auto base = (now_ms() - 30 * minute_ms) / 1000 * 1000;
  // Two batches, the second with older points than the first.
  post_points(n, dev.token, "h",
              {{base + 9000, 9}, {base + 5000, 5}, {base + 7000, 7},
               {base + 6000, 6}, {base + 8000, 8}});
  post_points(n, dev.token, "h",
              {{base + 0, 0}, {base + 2000, 2}, {base + 1000, 1},
               {base + 3000, 3}, {base + 4000, 4}});
  auto all = wait_history(n, viewer.token, dev.id, "h", 10);
  json expected = json::array();
  for (int i = 0; i < 10; ++i)
    expected.push_back({base + i * 1000, i});
  CHECK(all == expected);

  auto r = n.get("/api/v1/devices/" + dev.id + "/telemetry?metric=h",
                 viewer.token);
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK(r.body["metric"] == "h");

  auto limited = history(n, viewer.token, dev.id, "h", "&limit=3");
  INFO(limited.dump());
  REQUIRE(limited.size() == 3);
  CHECK(limited[0][0] < limited[1][0]);
  CHECK(limited[1][0] < limited[2][0]);
  for (auto& p : limited)
    CHECK(has_point(all, p[0].get<int64_t>(), p[1].get<double>()));

  auto window = history(n, viewer.token, dev.id, "h",
                        "&from=" + std::to_string(base + 2500)
                          + "&to=" + std::to_string(base + 6500));
  CHECK(window
        == json::array({{base + 3000, 3}, {base + 4000, 4}, {base + 5000, 5},
                        {base + 6000, 6}}));
  // RFC 3339 bounds.
  auto window2 = history(n, viewer.token, dev.id, "h",
                         "&from=" + url_encode(rfc3339(base + 7500))
                           + "&to=" + url_encode(rfc3339(base + 60000)));
  CHECK(window2 == json::array({{base + 8000, 8}, {base + 9000, 9}}));

  // Errors.
  auto stranger = make_user(n, "viewer", make_tenant(n));
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id + "/telemetry?metric=h",
                           stranger.token),
                     404);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + unique_id("nodev")
                             + "/telemetry?metric=h",
                           viewer.token),
                     404);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id
                             + "/telemetry?metric=h&limit=abc",
                           viewer.token),
                     400);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id
                             + "/telemetry?metric=h&from=yesterday",
                           viewer.token),
                     400);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id + "/telemetry?metric=h"),
                     401);
}

TEST_CASE("bucketed history with step", "[user][history]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto dev = make_device(n, tenant);
  // Minute-aligned, so buckets start at base whether they align to the
  // epoch or to `from`.
  auto base = (now_ms() - 120 * minute_ms) / minute_ms * minute_ms;
  post_points(n, dev.token, "b",
              {{base + 1000, 1},
               {base + 2000, 3},
               {base + 3000, 5},
               {base + 61'000, 10},
               {base + 185'000, 2},
               {base + 190'000, 4}});
  wait_history(n, op.token, dev.id, "b", 6);
  auto range = "&from=" + std::to_string(base)
               + "&to=" + std::to_string(base + 5 * minute_ms);
  json expected = json::array({{base, 3, 1, 5, 3},
                               {base + 60'000, 1, 10, 10, 10},
                               {base + 180'000, 2, 2, 4, 3}});
  for (auto step : {"60s", "1m"}) {
    auto r = n.get("/api/v1/devices/" + dev.id + "/telemetry?metric=b" + range
                     + "&step=" + step,
                   op.token);
    INFO("step=" << step << ": " << r.describe());
    REQUIRE(r.status == 200);
    REQUIRE(r.body["points"].is_array());
    // Empty buckets, if listed, are not compared.
    json nonempty = json::array();
    for (auto& b : r.body["points"]) {
      REQUIRE(b.is_array());
      REQUIRE(b.size() == 5);
      if (b[1] != 0)
        nonempty.push_back(b);
    }
    CHECK(nonempty == expected);
  }
  // Day buckets: all points in one or two (midnight UTC may fall between).
  auto day = n.get("/api/v1/devices/" + dev.id + "/telemetry?metric=b"
                     + "&from=" + std::to_string(base - 3 * 3'600'000)
                     + "&to=" + std::to_string(base + 5 * minute_ms)
                     + "&step=1d",
                   op.token);
  INFO(day.describe());
  TROUPE_REQUIRE_STATUS(day, 200);
  int64_t count = 0;
  double lo = 1e300, hi = -1e300, sum = 0;
  for (auto& b : day.body["points"]) {
    REQUIRE(b.size() == 5);
    auto c = b[1].get<int64_t>();
    if (c == 0)
      continue;
    count += c;
    lo = std::min(lo, b[2].get<double>());
    hi = std::max(hi, b[3].get<double>());
    sum += b[4].get<double>() * static_cast<double>(c);
  }
  CHECK(day.body["points"].size() <= 2);
  CHECK(count == 6);
  CHECK(lo == 1);
  CHECK(hi == 10);
  CHECK(std::fabs(sum - 25.0) < 1e-9);

  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id
                             + "/telemetry?metric=b&step=5x",
                           op.token),
                     400);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id
                             + "/telemetry?metric=b&step=abc",
                           op.token),
                     400);
}
