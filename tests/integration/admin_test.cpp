// Admin side of API.md: tenants, users, device registration (single and
// bulk), secret rotation, device deletion; admin-only access.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

using namespace troupe::test;

namespace {

bool is_2xx(const response& r) { return r.status >= 200 && r.status < 300; }

/// All items of an admin list endpoint, following next_cursor.
std::vector<json> list_all(const node& n, const std::string& token,
                           const std::string& path) {
  std::vector<json> out;
  std::string cursor;
  for (int guard = 0; guard < 1000; ++guard) {
    auto sep = path.find('?') == std::string::npos ? "?" : "&";
    auto r = n.get(path + (cursor.empty() ? "" : sep + ("cursor=" + url_encode(cursor))),
                   token);
    if (r.status != 200)
      n.fail("listing " + path + " failed", r);
    for (auto& i : list_items(r))
      out.push_back(i);
    if (r.body["next_cursor"].is_null())
      return out;
    cursor = r.body["next_cursor"].get<std::string>();
  }
  throw std::runtime_error("pagination of " + path + " does not end");
}

json find_where(const std::vector<json>& items, const std::string& key,
                const std::string& value) {
  for (auto& i : items)
    if (i.is_object() && i.contains(key) && i[key] == value)
      return i;
  return nullptr;
}

} // namespace

TEST_CASE("admin: tenants", "[admin]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto id = unique_id("acme");
  auto r = n.post("/api/v1/admin/tenants", {{"id", id}, {"name", "Acme Corp"}},
                  admin);
  INFO(r.describe());
  CHECK((r.status == 201 || r.status == 200));
  auto t = find_where(list_all(n, admin, "/api/v1/admin/tenants"), "id", id);
  INFO(t.dump());
  REQUIRE(t.is_object());
  CHECK(t["name"] == "Acme Corp");

  // Duplicate.
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/tenants",
                            {{"id", id}, {"name", "Again"}}, admin),
                     409);
  // Invalid.
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/tenants",
                            {{"id", "bad id!"}, {"name", "x"}}, admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/tenants", {{"name", "no id"}}, admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/tenants",
                            {{"id", 12}, {"name", "x"}}, admin),
                     400);
  TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/admin/tenants", "{\"id\":",
                               "application/json", {}, admin),
                     400);
  TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/admin/tenants",
                               json{{"id", unique_id("t")}, {"name", "x"}}.dump(),
                               "text/plain", {}, admin),
                     415);
  TROUPE_CHECK_ERROR(n.request("PUT", "/api/v1/admin/tenants",
                               json{{"id", unique_id("t")}, {"name", "x"}}.dump(),
                               "application/json", {}, admin),
                     405);
  // Not an admin.
  auto op = make_user(n, "operator", id);
  TROUPE_CHECK_ERROR(n.get("/api/v1/admin/tenants", op.token), 403);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/tenants",
                            {{"id", unique_id("t")}, {"name", "x"}}, op.token),
                     403);
  TROUPE_CHECK_ERROR(n.get("/api/v1/admin/tenants"), 401);
  TROUPE_CHECK_ERROR(n.get("/api/v1/admin/tenants", "garbage"), 401);
}

TEST_CASE("admin: users", "[admin]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto name = unique_id("viewer");
  auto r = n.post("/api/v1/admin/users",
                  {{"username", name},
                   {"password", "Viewer-pw-1"},
                   {"role", "viewer"},
                   {"tenant", tenant}},
                  admin);
  INFO(r.describe());
  CHECK((r.status == 201 || r.status == 200));
  CHECK(r.raw.find("Viewer-pw-1") == std::string::npos);

  auto users = list_all(n, admin, "/api/v1/admin/users");
  auto u = find_where(users, "username", name);
  INFO(u.dump());
  REQUIRE(u.is_object());
  CHECK(u["role"] == "viewer");
  CHECK(u["tenant"] == tenant);
  for (auto& item : users) {
    CHECK_FALSE(item.contains("password"));
    CHECK_FALSE(item.contains("password_hash"));
  }
  // The new user can log in.
  auto token = n.login(name, "Viewer-pw-1");
  TROUPE_CHECK_STATUS(n.get("/api/v1/me", token), 200);
  // Not an admin: 403 on every admin endpoint.
  TROUPE_CHECK_ERROR(n.get("/api/v1/admin/users", token), 403);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/users",
                            {{"username", unique_id("u")},
                             {"password", "Pw-1234567"},
                             {"role", "admin"},
                             {"tenant", tenant}},
                            token),
                     403);
  TROUPE_CHECK_ERROR(n.del("/api/v1/admin/users/" + name, token), 403);

  // Duplicate and invalid.
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/users",
                            {{"username", name},
                             {"password", "Other-pw-1"},
                             {"role", "viewer"},
                             {"tenant", tenant}},
                            admin),
                     409);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/users",
                            {{"username", unique_id("u")},
                             {"password", "Pw-1234567"},
                             {"role", "superuser"},
                             {"tenant", tenant}},
                            admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/users",
                            {{"username", "has spaces"},
                             {"password", "Pw-1234567"},
                             {"role", "viewer"},
                             {"tenant", tenant}},
                            admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/users",
                            {{"username", unique_id("u")},
                             {"role", "viewer"},
                             {"tenant", tenant}},
                            admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/users",
                            {{"username", unique_id("u")},
                             {"password", 1234},
                             {"role", "viewer"},
                             {"tenant", tenant}},
                            admin),
                     400);

  // Delete.
  auto d = n.del("/api/v1/admin/users/" + name, admin);
  INFO(d.describe());
  CHECK(is_2xx(d));
  CHECK(find_where(list_all(n, admin, "/api/v1/admin/users"), "username", name)
          .is_null());
  auto again = n.post("/api/v1/login",
                      {{"username", name}, {"password", "Viewer-pw-1"}});
  TROUPE_CHECK_ERROR(again, 401);
  TROUPE_CHECK_ERROR(n.del("/api/v1/admin/users/" + name, admin), 404);
  TROUPE_CHECK_ERROR(n.del("/api/v1/admin/users/" + unique_id("nobody"), admin),
                     404);
  TROUPE_CHECK_ERROR(n.get("/api/v1/admin/users"), 401);
}

TEST_CASE("admin: register one device", "[admin][devices]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto id = unique_id("sensor");
  auto r = n.post("/api/v1/admin/devices",
                  {{"id", id}, {"name", "Boiler room"}, {"tenant", tenant}},
                  admin);
  INFO(r.describe());
  REQUIRE(r.status == 201);
  REQUIRE(r.body.is_object());
  REQUIRE(r.body["secret"].is_string());
  auto secret = r.body["secret"].get<std::string>();
  CHECK(secret.size() >= 16);
  if (r.body.contains("id"))
    CHECK(r.body["id"] == id);
  // Visible to the admin and the tenant, secret never again.
  auto d = n.get("/api/v1/devices/" + id, admin);
  TROUPE_REQUIRE_STATUS(d, 200);
  CHECK(d.body["name"] == "Boiler room");
  CHECK(d.body["tenant"] == tenant);
  CHECK(d.raw.find(secret) == std::string::npos);
  CHECK_FALSE(n.device_login(id, secret).empty());

  // Duplicate, invalid, not allowed.
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                            {{"id", id}, {"name", "again"}, {"tenant", tenant}},
                            admin),
                     409);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                            {{"id", "bad/id"}, {"name", "x"}, {"tenant", tenant}},
                            admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                            {{"id", std::string(65, 'a')},
                             {"name", "x"},
                             {"tenant", tenant}},
                            admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                            {{"id", unique_id("d")}, {"name", "x"}}, admin),
                     400);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                            {{"id", 5}, {"name", "x"}, {"tenant", tenant}},
                            admin),
                     400);
  TROUPE_CHECK_ERROR(n.request("POST", "/api/v1/admin/devices", "[{\"id\":",
                               "application/json", {}, admin),
                     400);
  auto op = make_user(n, "operator", tenant);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                            {{"id", unique_id("d")}, {"name", "x"},
                             {"tenant", tenant}},
                            op.token),
                     403);
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices",
                            {{"id", unique_id("d")}, {"name", "x"},
                             {"tenant", tenant}}),
                     401);
}

TEST_CASE("admin: bulk registration returns each secret", "[admin][devices]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  std::vector<std::string> ids;
  for (int i = 0; i < 25; ++i)
    ids.push_back(unique_id("bulk"));
  auto creds = n.register_devices(admin, ids, tenant);
  REQUIRE(creds.size() == ids.size());
  std::set<std::string> secrets;
  for (auto& c : creds)
    secrets.insert(c.secret);
  CHECK(secrets.size() == ids.size());
  for (auto i : {size_t{0}, size_t{12}, size_t{24}})
    CHECK_FALSE(n.device_login(creds[i].id, creds[i].secret).empty());
  // A secret belongs to its device only.
  auto cross = n.post("/api/v1/device/login",
                      {{"device_id", creds[0].id}, {"secret", creds[1].secret}});
  TROUPE_CHECK_ERROR(cross, 401);
  // A bulk request holding an existing id conflicts.
  json body = json::array({{{"id", unique_id("bulk")}, {"name", "new"},
                            {"tenant", tenant}},
                           {{"id", ids[3]}, {"name", "dup"},
                            {"tenant", tenant}}});
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices", body, admin), 409);
  // A bulk request with an invalid entry is invalid.
  json bad = json::array({{{"id", unique_id("bulk")}, {"name", "ok"},
                           {"tenant", tenant}},
                          {{"id", "no spaces allowed"}, {"name", "bad"},
                           {"tenant", tenant}}});
  TROUPE_CHECK_ERROR(n.post("/api/v1/admin/devices", bad, admin), 400);
}

TEST_CASE("admin: rotate-secret", "[admin][devices]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto r = n.request("POST",
                     "/api/v1/admin/devices/" + dev.id + "/rotate-secret", "",
                     "application/json", {}, admin);
  INFO(r.describe());
  REQUIRE((r.status == 200 || r.status == 201));
  REQUIRE(r.body["secret"].is_string());
  auto fresh = r.body["secret"].get<std::string>();
  CHECK(fresh != dev.secret);
  TROUPE_CHECK_ERROR(n.post("/api/v1/device/login",
                            {{"device_id", dev.id}, {"secret", dev.secret}}),
                     401);
  CHECK_FALSE(n.device_login(dev.id, fresh).empty());
  // Unknown, not allowed, wrong method.
  TROUPE_CHECK_ERROR(n.request("POST",
                               "/api/v1/admin/devices/" + unique_id("nodev")
                                 + "/rotate-secret",
                               "", "application/json", {}, admin),
                     404);
  auto op = make_user(n, "operator", tenant);
  TROUPE_CHECK_ERROR(n.request("POST",
                               "/api/v1/admin/devices/" + dev.id
                                 + "/rotate-secret",
                               "", "application/json", {}, op.token),
                     403);
  TROUPE_CHECK_ERROR(n.get("/api/v1/admin/devices/" + dev.id + "/rotate-secret",
                           admin),
                     405);
  // The fresh secret still works: the failed calls changed nothing.
  CHECK_FALSE(n.device_login(dev.id, fresh).empty());
}

TEST_CASE("admin: delete device", "[admin][devices]") {
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto dev = make_device(n, tenant);
  auto keep = make_device(n, tenant);
  TROUPE_REQUIRE_STATUS(post_telemetry(n, dev.token, {{"values", {{"x", 1}}}}),
                        202);
  TROUPE_CHECK_ERROR(n.del("/api/v1/admin/devices/" + keep.id, op.token), 403);
  auto d = n.del("/api/v1/admin/devices/" + dev.id, admin);
  INFO(d.describe());
  CHECK(is_2xx(d));
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id, admin), 404);
  TROUPE_CHECK_ERROR(n.get("/api/v1/devices/" + dev.id, op.token), 404);
  TROUPE_CHECK_ERROR(n.post("/api/v1/device/login",
                            {{"device_id", dev.id}, {"secret", dev.secret}}),
                     401);
  TROUPE_CHECK_ERROR(post_telemetry(n, dev.token, {{"values", {{"x", 2}}}}), 401);
  TROUPE_CHECK_ERROR(n.del("/api/v1/admin/devices/" + dev.id, admin), 404);
  TROUPE_CHECK_ERROR(n.del("/api/v1/admin/devices/" + unique_id("nodev"), admin),
                     404);
  TROUPE_CHECK_ERROR(n.del("/api/v1/admin/devices/" + keep.id), 401);
  // The other device is untouched.
  TROUPE_CHECK_STATUS(n.get("/api/v1/devices/" + keep.id, op.token), 200);
  TROUPE_CHECK_STATUS(post_telemetry(n, keep.token, {{"values", {{"x", 3}}}}),
                      202);
}

TEST_CASE("admin: rotations and deletions leave no stray output",
          "[admin][devices]") {
  // Once, every reset of a live device actor answered a reply nobody
  // handled, and CAF printed "*** unexpected message" on stderr.
  auto& n = shared_node();
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  for (int i = 0; i < 3; ++i) {
    auto dev = make_device(n, tenant);
    TROUPE_REQUIRE_STATUS(
      post_telemetry(n, dev.token, {{"values", {{"x", i}}}}), 202);
    auto rot = n.request("POST",
                         "/api/v1/admin/devices/" + dev.id + "/rotate-secret",
                         "", "application/json", {}, admin);
    TROUPE_REQUIRE_STATUS(rot, 200);
    // Rotation takes effect at once: the old token is gone too.
    TROUPE_CHECK_ERROR(
      post_telemetry(n, dev.token, {{"values", {{"x", i}}}}), 401);
    CHECK(is_2xx(n.del("/api/v1/admin/devices/" + dev.id, admin)));
  }
  // The log is written by the node asynchronously: look a moment later.
  TROUPE_CHECK_STATUS(n.get("/healthz"), 200);
  auto log = n.log_tail(100000);
  CHECK(log.find("unexpected message") == std::string::npos);
  CHECK(log.find("*** ") == std::string::npos);
}
