// What the web console needs from a node: the console itself at / (hashed
// assets cached for ever, index.html revalidated, gzip, deep links), the
// OpenAPI document, cross-site request refusal for cookie sessions, and the
// API the console's pages added (rename a device, set and change
// passwords).

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <regex>
#include <thread>

using namespace troupe::test;

namespace {

headers cookie_of(const std::string& token, const std::string& origin = "") {
  headers h{{"Cookie", "troupe_session=" + token}};
  if (!origin.empty())
    h.emplace("Origin", origin);
  return h;
}

/// The Origin a browser sends for a page of this node (httplib sends
/// Host: 127.0.0.1:PORT).
std::string own_origin(const node& n) {
  return "http://127.0.0.1:" + std::to_string(n.port());
}

} // namespace

TEST_CASE("the console is served at / with its assets", "[console]") {
  auto& n = shared_node();
  auto index = n.get("/");
  TROUPE_REQUIRE_STATUS(index, 200);
  CHECK(index.header("Content-Type").rfind("text/html", 0) == 0);
  CHECK(index.header("Cache-Control") == "no-cache");
  CHECK(!index.header("Content-Security-Policy").empty());
  CHECK(index.header("X-Frame-Options") == "DENY");
  auto etag = index.header("ETag");
  REQUIRE(!etag.empty());
  // The same file for any page path (the app routes in the browser).
  auto deep = n.get("/devices/some-device?range=7d");
  TROUPE_REQUIRE_STATUS(deep, 200);
  CHECK(deep.raw == index.raw);
  CHECK(n.get("/admin/users").raw == index.raw);
  // Revalidation.
  auto again = n.get("/", "", {{"If-None-Match", etag}});
  TROUPE_CHECK_STATUS(again, 304);
  CHECK(again.raw.empty());
  // Every script and stylesheet it names is served, cacheable for ever.
  std::regex asset{R"re((src|href)="(/assets/[^"]+)")re"};
  int assets = 0;
  // Issue 8: a first load is at most 200 KB on the wire (gzip).
  size_t first_load = 0;
  {
    auto z = n.get("/", "", {{"Accept-Encoding", "gzip"}});
    first_load += std::stoul(z.header("Content-Length").empty()
                               ? "0" : z.header("Content-Length"));
  }
  for (std::sregex_iterator it(index.raw.begin(), index.raw.end(), asset), end;
       it != end; ++it) {
    auto path = (*it)[2].str();
    INFO(path);
    auto a = n.get(path);
    TROUPE_REQUIRE_STATUS(a, 200);
    CHECK(a.header("Cache-Control") == "public, max-age=31536000, immutable");
    CHECK(!a.raw.empty());
    if (path.size() > 3 && path.compare(path.size() - 3, 3, ".js") == 0) {
      CHECK(a.header("Content-Type").rfind("text/javascript", 0) == 0);
      // Precompressed for clients that take gzip (httplib decodes it).
      auto z = n.get(path, "", {{"Accept-Encoding", "gzip"}});
      TROUPE_REQUIRE_STATUS(z, 200);
      CHECK(z.header("Content-Encoding") == "gzip");
      CHECK(a.header("Content-Encoding").empty());
      CHECK(z.raw == a.raw);
    }
    auto wire = n.get(path, "", {{"Accept-Encoding", "gzip"}});
    first_load += wire.header("Content-Encoding") == "gzip"
                    ? std::stoul(wire.header("Content-Length"))
                    : wire.raw.size();
    ++assets;
  }
  CHECK(assets >= 1);
  INFO("first load: " << first_load << " bytes on the wire");
  CHECK(first_load > 1000);
  CHECK(first_load <= 200 * 1024);
  // An unknown asset is a 404, not the page; so is an unknown API path.
  TROUPE_CHECK_ERROR(n.get("/assets/no-such-file-0000.js"), 404);
  TROUPE_CHECK_ERROR(n.get("/api/v1/no-such-endpoint"), 404);
  TROUPE_CHECK_ERROR(n.post("/devices/x", json::object()), 404);
}

TEST_CASE("the OpenAPI document is served", "[console]") {
  auto& n = shared_node();
  auto r = n.get("/api/v1/openapi.json");
  TROUPE_REQUIRE_STATUS(r, 200);
  REQUIRE(r.body.is_object());
  CHECK(r.body["openapi"].get<std::string>().rfind("3.1", 0) == 0);
  CHECK(r.body["paths"].contains("/api/v1/devices/{id}"));
}

TEST_CASE("a cookie session refuses requests from another site's pages",
          "[console][csrf]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto dev = make_device(n, tenant);
  auto path = "/api/v1/devices/" + dev.id + "/commands";
  auto body = json{{"name", "reboot"}}.dump();
  // A form on another site posting with the user's cookie.
  auto forged = n.request("POST", path, body, "application/json",
                          cookie_of(op.token, "http://evil.example"));
  TROUPE_CHECK_ERROR(forged, 403);
  auto forged_form = n.request(
    "POST", path, "name=reboot", "application/x-www-form-urlencoded",
    {{"Cookie", "troupe_session=" + op.token},
     {"Referer", "https://evil.example/page.html"}});
  TROUPE_CHECK_ERROR(forged_form, 403);
  auto listed = n.get(path, op.token);
  TROUPE_REQUIRE_STATUS(listed, 200);
  CHECK(list_items(listed).empty());
  // The console itself (same origin), and bearer clients from anywhere.
  TROUPE_CHECK_STATUS(n.request("POST", path, body, "application/json",
                                cookie_of(op.token, own_origin(n))),
                      201);
  TROUPE_CHECK_STATUS(n.request("POST", path, body, "application/json",
                                {{"Origin", "http://evil.example"}}, op.token),
                      201);
  // Reads are not refused (they change nothing), and a forged logout does
  // not end the session.
  TROUPE_CHECK_STATUS(n.get("/api/v1/me", "",
                            cookie_of(op.token, "http://evil.example")),
                      200);
  TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/logout", "", "application/json",
                               cookie_of(op.token, "http://evil.example")),
                     403);
  TROUPE_CHECK_STATUS(n.get("/api/v1/me", op.token), 200);
}

TEST_CASE("an admin renames a device", "[console][admin]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto viewer = make_user(n, "viewer", tenant);
  auto path = "/api/v1/admin/devices/" + dev.id;
  auto r = n.patch(path, json{{"name", "Pump 7 (north)"}}, admin);
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK(r.body["id"] == dev.id);
  CHECK(r.body["name"] == "Pump 7 (north)");
  // Every later read has the new name (the live actor reloaded).
  auto seen = n.get("/api/v1/devices/" + dev.id, viewer.token);
  TROUPE_REQUIRE_STATUS(seen, 200);
  CHECK(seen.body["name"] == "Pump 7 (north)");
  auto listed = n.get("/api/v1/devices?q=" + dev.id, viewer.token);
  TROUPE_REQUIRE_STATUS(listed, 200);
  REQUIRE(list_items(listed).size() == 1);
  CHECK(list_items(listed)[0]["name"] == "Pump 7 (north)");
  // Errors.
  TROUPE_CHECK_ERROR(n.patch(path, json{{"name", "x"}}, viewer.token), 403);
  TROUPE_CHECK_ERROR(n.patch(path, json{{"name", ""}}, admin), 400);
  TROUPE_CHECK_ERROR(n.patch(path, json{{"name", 7}}, admin), 400);
  TROUPE_CHECK_ERROR(n.patch(path, json{{"name", std::string("a\nb")}}, admin),
                     400);
  TROUPE_CHECK_ERROR(n.patch("/api/v1/admin/devices/" + unique_id("nodev"),
                             json{{"name", "x"}}, admin),
                     404);
}

TEST_CASE("an admin sets a device's silence window", "[console][admin]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto viewer = make_user(n, "viewer", tenant);
  auto path = "/api/v1/admin/devices/" + dev.id;
  auto patch = [&](const json& body) {
    return n.patch(path, body, admin);
  };
  auto detail = [&] {
    auto r = n.get("/api/v1/devices/" + dev.id, viewer.token);
    TROUPE_REQUIRE_STATUS(r, 200);
    return r.body;
  };
  CHECK(detail()["silence_s"].is_null());
  auto r = patch({{"silence_s", 600}});
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK(r.body["silence_s"] == 600);
  // Only the window changed; reads and the list show it.
  CHECK(detail()["silence_s"] == 600);
  CHECK(detail()["name"] == r.body["name"]);
  auto listed = n.get("/api/v1/devices?q=" + dev.id, viewer.token);
  TROUPE_REQUIRE_STATUS(listed, 200);
  REQUIRE(list_items(listed).size() == 1);
  CHECK(list_items(listed)[0]["silence_s"] == 600);
  CHECK(n.db()->query("SELECT silence_s FROM devices WHERE id = '" + dev.id
                      + "'")[0][0]
        == "600");
  // A rename leaves the window; null goes back to the node's default.
  TROUPE_CHECK_STATUS(patch({{"name", "Quiet pump"}}), 200);
  CHECK(detail()["silence_s"] == 600);
  TROUPE_CHECK_STATUS(patch({{"silence_s", nullptr}}), 200);
  CHECK(detail()["silence_s"].is_null());
  CHECK(detail()["name"] == "Quiet pump");
  // A window given at registration.
  auto id2 = unique_id("sw");
  auto reg = n.post("/api/v1/admin/devices",
                    {{"id", id2}, {"tenant", tenant}, {"silence_s", 90}},
                    admin);
  TROUPE_REQUIRE_STATUS(reg, 201);
  auto seen = n.get("/api/v1/devices/" + id2, admin);
  TROUPE_REQUIRE_STATUS(seen, 200);
  CHECK(seen.body["silence_s"] == 90);
  // Errors.
  for (auto bad : {json(0), json(-5), json(1.5), json("60"),
                   json(365LL * 86400 + 1), json(1e30), json::array()}) {
    INFO(bad.dump());
    TROUPE_CHECK_ERROR(patch({{"silence_s", bad}}), 400);
    TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                              {{"id", unique_id("sw")},
                               {"tenant", tenant},
                               {"silence_s", bad}},
                              admin),
                       400);
  }
  // Changes while the device is busy: every upload and read is answered
  // as usual (the reloading actor hands requests to the fresh copy, never
  // "not found" or a refused token).
  {
    std::atomic<bool> stop{false};
    std::map<int, int> uploads, reads;
    std::thread busy{[&] {
      while (!stop) {
        ++uploads[post_telemetry(n, dev.token, {{"values", {{"t", 1}}}})
                    .status];
        ++reads[n.get("/api/v1/devices/" + dev.id, viewer.token).status];
      }
    }};
    for (int i = 0; i < 40; ++i)
      TROUPE_CHECK_STATUS(patch({{"silence_s", 60 + i}}), 200);
    stop = true;
    busy.join();
    INFO("uploads " << uploads[202] << " reads " << reads[200]);
    CHECK(uploads.size() == 1);
    CHECK(uploads.count(202) == 1);
    CHECK(reads.size() == 1);
    CHECK(reads.count(200) == 1);
    CHECK(detail()["silence_s"] == 99);
    TROUPE_CHECK_STATUS(patch({{"silence_s", nullptr}}), 200);
  }
  TROUPE_CHECK_ERROR(patch(json::object()), 400);
  TROUPE_CHECK_ERROR(n.patch(path, json{{"silence_s", 60}}, viewer.token), 403);
  CHECK(detail()["silence_s"].is_null());
}

TEST_CASE("an admin sets a user's password; its sessions end",
          "[console][admin]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto u = make_user(n, "operator", tenant);
  auto path = "/api/v1/admin/users/" + u.username + "/password";
  TROUPE_CHECK_ERROR(n.post(path, {{"password", "short"}}, admin), 400);
  TROUPE_CHECK_ERROR(n.post(path, {{"password", "new-Pw-0123456789"}}, u.token),
                     403);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/users/" + unique_id("nouser")
                              + "/password",
                            {{"password", "new-Pw-0123456789"}}, admin),
                     404);
  auto r = n.post(path, {{"password", "new-Pw-0123456789"}}, admin);
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK(r.body["ok"] == true);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", u.token), 401);
  TROUPE_CHECK_ERROR(n.post("/api/v1/login",
                            {{"username", u.username}, {"password", u.password}}),
                     401);
  CHECK(!n.login(u.username, "new-Pw-0123456789").empty());
}

TEST_CASE("a user changes its own password", "[console][user]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto u = make_user(n, "viewer", tenant);
  auto other_session = n.login(u.username, u.password);
  TROUPE_CHECK_ERROR(n.post("/api/v1/me/password",
                            {{"current_password", "wrong-password-1"},
                             {"new_password", "next-Pw-0123456789"}},
                            u.token),
                     403);
  auto wrong = n.post("/api/v1/me/password",
                      {{"current_password", "wrong-password-1"},
                       {"new_password", "next-Pw-0123456789"}},
                      u.token);
  CHECK(wrong.body["error"]["code"] == "wrong_password");
  TROUPE_CHECK_ERROR(n.post("/api/v1/me/password",
                            {{"current_password", u.password},
                             {"new_password", "short"}},
                            u.token),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/me/password",
                            {{"current_password", u.password}}, u.token),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/me/password",
                            {{"current_password", u.password},
                             {"new_password", "next-Pw-0123456789"}}),
                     401);
  auto ok = n.post("/api/v1/me/password",
                   {{"current_password", u.password},
                    {"new_password", "next-Pw-0123456789"}},
                   u.token);
  TROUPE_REQUIRE_STATUS(ok, 200);
  // This session stays; the other one ended; the new password logs in.
  TROUPE_CHECK_STATUS(n.get("/api/v1/me", u.token), 200);
  TROUPE_CHECK_ERROR(n.get("/api/v1/me", other_session), 401);
  TROUPE_CHECK_ERROR(n.post("/api/v1/login", {{"username", u.username},
                                              {"password", u.password}}),
                     401);
  CHECK(!n.login(u.username, "next-Pw-0123456789").empty());
}
