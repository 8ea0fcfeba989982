// Commands, end to end: an operator posts, the device receives (login,
// telemetry answer, long poll), reports a result; at-least-once redelivery;
// expiry; roles, tenants and malformed requests.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>

using namespace troupe::test;

namespace {

struct fixture {
  node& n = shared_node();
  std::string tenant = make_tenant(n);
  user_login op = make_user(n, "operator", tenant);
  device_login_info dev = make_device(n, tenant);
};

response post_command(const node& n, const std::string& token,
                      const std::string& device, const json& body) {
  return n.post("/api/v1/devices/" + device + "/commands", body, token);
}

/// Posts a command that must be accepted; returns it.
json must_post_command(const node& n, const std::string& token,
                       const std::string& device, const std::string& name,
                       int64_t ttl_s = 3600, json args = json::object()) {
  auto r = post_command(n, token, device,
                        {{"name", name}, {"args", args}, {"ttl_s", ttl_s}});
  if (r.status != 201 || !r.body.is_object() || !r.body["id"].is_string())
    n.fail("posting command " + name + " failed", r);
  return r.body;
}

/// The command list of a device, as the user sees it.
json command_list(const node& n, const std::string& token,
                  const std::string& device, const std::string& query = "") {
  auto r = n.get("/api/v1/devices/" + device + "/commands" + query, token);
  if (r.status != 200)
    n.fail("listing commands failed", r);
  return list_items(r);
}

json find_by_id(const json& items, const std::string& id) {
  for (auto& i : items)
    if (i.is_object() && i.value("id", "") == id)
      return i;
  return nullptr;
}

/// Waits until the command shows `status` in the list; returns it.
json wait_status(const node& n, const std::string& token,
                 const std::string& device, const std::string& id,
                 const std::string& status,
                 std::chrono::milliseconds timeout = 15s) {
  json cmd;
  eventually(
    [&] {
      cmd = find_by_id(command_list(n, token, device), id);
      return cmd.is_object() && cmd.value("status", "") == status;
    },
    timeout);
  return cmd;
}

std::vector<std::string> command_ids(const json& commands) {
  return ids_of(commands);
}

bool contains(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

} // namespace

TEST_CASE("operator posts a command, the device fetches it and reports done",
          "[commands]") {
  fixture f;
  auto before = now_ms();
  auto r = post_command(f.n, f.op.token, f.dev.id,
                        {{"name", "reboot"},
                         {"args", {{"delay_s", 5}}},
                         {"ttl_s", 3600}});
  INFO(r.describe());
  REQUIRE(r.status == 201);
  auto cmd = r.body;
  auto id = cmd.value("id", "");
  REQUIRE_FALSE(id.empty());
  CHECK(cmd["name"] == "reboot");
  CHECK(cmd["args"] == json{{"delay_s", 5}});
  CHECK(cmd["status"] == "pending");
  auto created = cmd.value("created_ms", int64_t{0});
  CHECK(created >= before - 5000);
  CHECK(created <= now_ms() + 5000);
  CHECK(std::llabs(cmd.value("expires_ms", int64_t{0}) - (created + 3'600'000))
        <= 2000);

  // Listed as pending, and counted on the device.
  auto listed = find_by_id(command_list(f.n, f.op.token, f.dev.id), id);
  REQUIRE(listed.is_object());
  CHECK(listed["status"] == "pending");
  json detail;
  CHECK(eventually(
    [&] {
      auto d = f.n.get("/api/v1/devices/" + f.dev.id, f.op.token);
      detail = d.body;
      return d.status == 200 && d.body.value("pending_commands", -1) == 1;
    },
    10s));
  INFO(detail.dump());

  // The device gets it at once, even with a wait.
  auto poll = f.n.get("/api/v1/device/commands?wait=5", f.dev.token, {}, 20s);
  INFO(poll.describe());
  REQUIRE(poll.status == 200);
  CHECK(poll.elapsed_s < 3.0);
  REQUIRE(poll.body["commands"].is_array());
  auto got = find_by_id(poll.body["commands"], id);
  REQUIRE(got.is_object());
  CHECK(got["name"] == "reboot");
  CHECK(got["args"] == json{{"delay_s", 5}});
  CHECK(got["created_ms"] == cmd["created_ms"]);
  CHECK(got["expires_ms"] == cmd["expires_ms"]);

  auto delivered = wait_status(f.n, f.op.token, f.dev.id, id, "delivered");
  INFO(delivered.dump());
  CHECK(delivered["status"] == "delivered");
  CHECK(delivered["delivered_ms"].is_number());

  // Result.
  auto res = f.n.post("/api/v1/device/commands/" + id + "/result",
                      {{"status", "done"}, {"result", {{"uptime_s", 3}}}},
                      f.dev.token);
  TROUPE_CHECK_STATUS(res, 200);
  auto done = wait_status(f.n, f.op.token, f.dev.id, id, "done");
  INFO(done.dump());
  CHECK(done["status"] == "done");
  CHECK(done["result"] == json{{"uptime_s", 3}});
  REQUIRE(done["finished_ms"].is_number());
  CHECK(done["finished_ms"].get<int64_t>()
        >= done["delivered_ms"].get<int64_t>());

  // Status filter.
  CHECK(contains(ids_of(command_list(f.n, f.op.token, f.dev.id, "?status=done")),
                 id));
  CHECK_FALSE(contains(
    ids_of(command_list(f.n, f.op.token, f.dev.id, "?status=pending")), id));

  // Nothing left for the device.
  auto empty = f.n.get("/api/v1/device/commands?wait=0", f.dev.token);
  TROUPE_CHECK_STATUS(empty, 200);
  CHECK(empty.body["commands"] == json::array());
  CHECK(eventually(
    [&] {
      auto d = f.n.get("/api/v1/devices/" + f.dev.id, f.op.token);
      return d.status == 200 && d.body.value("pending_commands", -1) == 0;
    },
    10s));
}

TEST_CASE("long poll: empty at the timeout, answered at once on a command",
          "[commands][long_poll]") {
  fixture f;
  // Nothing pending: wait=0 answers at once, wait=1 after about a second.
  auto now = f.n.get("/api/v1/device/commands", f.dev.token);
  TROUPE_CHECK_STATUS(now, 200);
  CHECK(now.body["commands"] == json::array());
  CHECK(now.elapsed_s < 2.0);
  auto one = f.n.get("/api/v1/device/commands?wait=1", f.dev.token, {}, 15s);
  TROUPE_CHECK_STATUS(one, 200);
  CHECK(one.body["commands"] == json::array());
  CHECK(one.elapsed_s >= 0.8);
  CHECK(one.elapsed_s < 5.0);

  // A command posted during the wait ends it.
  std::atomic<bool> started{false};
  response poll;
  std::thread waiter{[&] {
    started = true;
    poll = f.n.get("/api/v1/device/commands?wait=30", f.dev.token, {}, 45s);
  }};
  while (!started)
    std::this_thread::sleep_for(5ms);
  // Give the request time to reach the server and park (not a correctness
  // wait: the checks below hold either way, the elapsed bound shows it).
  std::this_thread::sleep_for(500ms);
  auto posted_at = clock_type::now();
  auto cmd = must_post_command(f.n, f.op.token, f.dev.id, "ping");
  waiter.join();
  auto after_post = std::chrono::duration<double>(clock_type::now() - posted_at)
                      .count();
  INFO(poll.describe());
  REQUIRE(poll.status == 200);
  REQUIRE(poll.body["commands"].is_array());
  CHECK(contains(ids_of(poll.body["commands"]), cmd["id"].get<std::string>()));
  CHECK(poll.elapsed_s >= 0.4);
  CHECK(poll.elapsed_s < 10.0);
  CHECK(after_post < 5.0);
}

TEST_CASE("long poll: wait outside 0..60 or not a number is 400",
          "[commands][errors]") {
  fixture f;
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/device/commands?wait=61", f.dev.token), 400);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/device/commands?wait=-1", f.dev.token), 400);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/device/commands?wait=abc", f.dev.token), 400);
}

TEST_CASE("delivery is at least once: redelivered at the next login",
          "[commands]") {
  fixture f;
  auto c1 = must_post_command(f.n, f.op.token, f.dev.id, "first");
  auto c2 = must_post_command(f.n, f.op.token, f.dev.id, "second");
  auto id1 = c1["id"].get<std::string>();
  auto id2 = c2["id"].get<std::string>();
  auto login = [&] {
    auto r = f.n.post("/api/v1/device/login",
                      {{"device_id", f.dev.id}, {"secret", f.dev.secret}});
    if (r.status != 200)
      f.n.fail("device login failed", r);
    return r.body;
  };
  // Oldest first.
  auto l1 = login();
  auto ids = command_ids(l1["commands"]);
  INFO(l1.dump());
  REQUIRE(ids.size() == 2);
  CHECK(ids[0] == id1);
  CHECK(ids[1] == id2);
  CHECK(wait_status(f.n, f.op.token, f.dev.id, id1, "delivered")["status"]
        == "delivered");
  CHECK(wait_status(f.n, f.op.token, f.dev.id, id2, "delivered")["status"]
        == "delivered");
  // Delivered without result: delivered again.
  auto l2 = login();
  CHECK(command_ids(l2["commands"]) == std::vector<std::string>{id1, id2});
  // A result for one of them; the other still comes back.
  auto token = l2["token"].get<std::string>();
  auto res = f.n.post("/api/v1/device/commands/" + id1 + "/result",
                      {{"status", "failed"}, {"result", {{"error", "busy"}}}},
                      token);
  TROUPE_CHECK_STATUS(res, 200);
  auto failed = wait_status(f.n, f.op.token, f.dev.id, id1, "failed");
  CHECK(failed["status"] == "failed");
  CHECK(failed["result"] == json{{"error", "busy"}});
  CHECK(failed["finished_ms"].is_number());
  auto l3 = login();
  CHECK(command_ids(l3["commands"]) == std::vector<std::string>{id2});
}

TEST_CASE("telemetry answers carry pending commands", "[commands]") {
  fixture f;
  auto cmd = must_post_command(f.n, f.op.token, f.dev.id, "calibrate", 600,
                               {{"offset", 0.5}});
  auto r = post_telemetry(f.n, f.dev.token, {{"values", {{"t", 1}}}});
  INFO(r.describe());
  REQUIRE(r.status == 202);
  REQUIRE(r.body["commands"].is_array());
  auto got = find_by_id(r.body["commands"], cmd["id"].get<std::string>());
  REQUIRE(got.is_object());
  CHECK(got["name"] == "calibrate");
  CHECK(got["args"] == json{{"offset", 0.5}});
}

TEST_CASE("a command whose ttl passes while pending expires", "[commands]") {
  fixture f;
  auto cmd = must_post_command(f.n, f.op.token, f.dev.id, "short-lived", 1);
  auto id = cmd["id"].get<std::string>();
  CHECK(std::llabs(cmd["expires_ms"].get<int64_t>()
                   - cmd["created_ms"].get<int64_t>() - 1000)
        <= 1000);
  auto expired = wait_status(f.n, f.op.token, f.dev.id, id, "expired", 30s);
  INFO(expired.dump());
  CHECK(expired["status"] == "expired");
  // Not delivered any more.
  auto r = f.n.post("/api/v1/device/login",
                    {{"device_id", f.dev.id}, {"secret", f.dev.secret}});
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK_FALSE(contains(ids_of(r.body["commands"]), id));
  auto poll = f.n.get("/api/v1/device/commands", f.dev.token);
  CHECK_FALSE(contains(ids_of(poll.body["commands"]), id));
  CHECK(contains(
    ids_of(command_list(f.n, f.op.token, f.dev.id, "?status=expired")), id));
}

TEST_CASE("commands: roles and tenants", "[commands][errors]") {
  fixture f;
  auto viewer = make_user(f.n, "viewer", f.tenant);
  auto body = json{{"name", "reboot"}, {"args", json::object()}, {"ttl_s", 60}};
  TROUPE_CHECK_ERROR(post_command(f.n, viewer.token, f.dev.id, body), 403);
  // The viewer may read.
  TROUPE_CHECK_STATUS(f.n.get("/api/v1/devices/" + f.dev.id + "/commands",
                              viewer.token),
                      200);
  // The admin may post.
  TROUPE_CHECK_STATUS(post_command(f.n, f.n.admin_token(), f.dev.id, body), 201);
  // Another tenant's operator sees no such device.
  auto other_tenant = make_tenant(f.n);
  auto stranger = make_user(f.n, "operator", other_tenant);
  TROUPE_CHECK_ERROR(post_command(f.n, stranger.token, f.dev.id, body), 404);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/devices/" + f.dev.id + "/commands",
                             stranger.token),
                     404);
  // Unknown device.
  TROUPE_CHECK_ERROR(post_command(f.n, f.op.token, unique_id("nodev"), body),
                     404);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/devices/" + unique_id("nodev")
                               + "/commands",
                             f.op.token),
                     404);
  // No or bad credentials.
  TROUPE_CHECK_ERROR(post_command(f.n, "", f.dev.id, body), 401);
  TROUPE_CHECK_ERROR(post_command(f.n, "garbage", f.dev.id, body), 401);
  // A device token is not a user session.
  auto as_device = post_command(f.n, f.dev.token, f.dev.id, body);
  INFO(as_device.describe());
  CHECK((as_device.status == 401 || as_device.status == 403));
}

TEST_CASE("commands: malformed requests", "[commands][errors]") {
  fixture f;
  auto path = "/api/v1/devices/" + f.dev.id + "/commands";
  TROUPE_CHECK_ERROR(f.n.request("POST", path, "{\"name\": ", "application/json",
                                 {}, f.op.token),
                     400);
  TROUPE_CHECK_ERROR(post_command(f.n, f.op.token, f.dev.id,
                                  {{"args", json::object()}}),
                     400);
  TROUPE_CHECK_ERROR(post_command(f.n, f.op.token, f.dev.id, {{"name", 42}}), 400);
  TROUPE_CHECK_ERROR(post_command(f.n, f.op.token, f.dev.id,
                                  {{"name", "x"}, {"args", "not an object"}}),
                     400);
  TROUPE_CHECK_ERROR(post_command(f.n, f.op.token, f.dev.id,
                                  {{"name", "x"}, {"ttl_s", "long"}}),
                     400);
  TROUPE_CHECK_ERROR(f.n.request("POST", path,
                                 json{{"name", "x"}}.dump(), "text/plain", {},
                                 f.op.token),
                     415);
  TROUPE_CHECK_ERROR(f.n.request("PUT", path, json{{"name", "x"}}.dump(),
                                 "application/json", {}, f.op.token),
                     405);
}

TEST_CASE("command results: errors", "[commands][errors]") {
  fixture f;
  auto cmd = must_post_command(f.n, f.op.token, f.dev.id, "reboot");
  auto id = cmd["id"].get<std::string>();
  auto result_path = "/api/v1/device/commands/" + id + "/result";
  // Unknown command.
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/device/commands/" + unique_id("nocmd")
                                + "/result",
                              {{"status", "done"}, {"result", json::object()}},
                              f.dev.token),
                     404);
  // Another device's command.
  auto other = make_device(f.n, f.tenant);
  TROUPE_CHECK_ERROR(f.n.post(result_path,
                              {{"status", "done"}, {"result", json::object()}},
                              other.token),
                     404);
  // Bad bodies.
  TROUPE_CHECK_ERROR(f.n.post(result_path,
                              {{"status", "maybe"}, {"result", json::object()}},
                              f.dev.token),
                     400);
  TROUPE_CHECK_ERROR(f.n.post(result_path, {{"status", 1}}, f.dev.token), 400);
  TROUPE_CHECK_ERROR(f.n.request("POST", result_path, "{", "application/json",
                                 {}, f.dev.token),
                     400);
  // No credentials.
  TROUPE_CHECK_ERROR(f.n.post(result_path, {{"status", "done"}}), 401);
  TROUPE_CHECK_ERROR(f.n.get(result_path, f.dev.token), 405);
  // Nothing of this changed the command.
  auto listed = find_by_id(command_list(f.n, f.op.token, f.dev.id), id);
  REQUIRE(listed.is_object());
  CHECK(listed["status"] == "pending");
}

TEST_CASE("a command handed to the device reads as delivered at once",
          "[commands]") {
  // Read your writes: the device actor marks the command delivered in
  // PostgreSQL in the background, and a list right after the pickup once
  // still said pending.
  fixture f;
  for (int i = 0; i < 25; ++i) {
    auto cmd = must_post_command(f.n, f.op.token, f.dev.id,
                                 "ryw" + std::to_string(i));
    auto id = cmd["id"].get<std::string>();
    auto got = f.n.get("/api/v1/device/commands", f.dev.token);
    TROUPE_REQUIRE_STATUS(got, 200);
    REQUIRE(contains(command_ids(got.body["commands"]), id));
    auto listed = find_by_id(command_list(f.n, f.op.token, f.dev.id), id);
    INFO("round " << i << ": " << listed.dump());
    REQUIRE(listed.is_object());
    CHECK(listed["status"] == "delivered");
    CHECK(listed["delivered_ms"].is_number_integer());
    auto filtered = find_by_id(
      command_list(f.n, f.op.token, f.dev.id, "?status=delivered"), id);
    CHECK(filtered.is_object());
    CHECK(find_by_id(command_list(f.n, f.op.token, f.dev.id,
                                  "?status=pending"),
                     id)
            .is_null());
    // Finish it, so the device's open list stays short.
    TROUPE_REQUIRE_STATUS(
      f.n.post("/api/v1/device/commands/" + id + "/result",
               {{"status", "done"}}, f.dev.token),
      200);
  }
}

TEST_CASE("an operator cancels a pending command; it is never delivered",
          "[commands]") {
  fixture f;
  auto cancel = [&](const std::string& token, const std::string& device,
                    const std::string& id) {
    return f.n.post("/api/v1/devices/" + device + "/commands/" + id
                      + "/cancel",
                    json::object(), token);
  };
  auto doomed = must_post_command(f.n, f.op.token, f.dev.id, "wipe");
  auto kept = must_post_command(f.n, f.op.token, f.dev.id, "ping");
  auto doomed_id = doomed["id"].get<std::string>();
  auto kept_id = kept["id"].get<std::string>();

  // Roles and tenants first: the command stays pending.
  auto viewer = make_user(f.n, "viewer", f.tenant);
  TROUPE_CHECK_ERROR(cancel(viewer.token, f.dev.id, doomed_id), 403);
  auto stranger = make_user(f.n, "operator", make_tenant(f.n));
  TROUPE_CHECK_ERROR(cancel(stranger.token, f.dev.id, doomed_id), 404);
  TROUPE_CHECK_ERROR(cancel("", f.dev.id, doomed_id), 401);
  TROUPE_CHECK_ERROR(cancel(f.op.token, f.dev.id, unique_id("nocmd")), 404);
  // Another device's command is not this device's.
  auto other = make_device(f.n, f.tenant);
  TROUPE_CHECK_ERROR(cancel(f.op.token, other.id, doomed_id), 404);

  auto r = cancel(f.op.token, f.dev.id, doomed_id);
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK(r.body["id"] == doomed_id);
  CHECK(r.body["status"] == "cancelled");
  CHECK(r.body["finished_ms"].is_number());
  CHECK(r.body["result"] == json{{"cancelled_by", f.op.username}});
  // A repeat (a client retrying after a lost answer) answers the same.
  auto repeat = cancel(f.op.token, f.dev.id, doomed_id);
  TROUPE_CHECK_STATUS(repeat, 200);
  CHECK(repeat.body == r.body);

  // The device gets the other command only, by every way of delivery.
  auto poll = f.n.get("/api/v1/device/commands?wait=2", f.dev.token, {}, 15s);
  TROUPE_REQUIRE_STATUS(poll, 200);
  CHECK(ids_of(poll.body["commands"]) == std::vector<std::string>{kept_id});
  auto login = f.n.post("/api/v1/device/login",
                        {{"device_id", f.dev.id}, {"secret", f.dev.secret}});
  TROUPE_REQUIRE_STATUS(login, 200);
  CHECK(ids_of(login.body["commands"]) == std::vector<std::string>{kept_id});
  // A delivered command can no longer be cancelled.
  auto late = cancel(f.op.token, f.dev.id, kept_id);
  TROUPE_CHECK_ERROR(late, 409);
  CHECK(late.raw.find("delivered") != std::string::npos);

  // The list says so; the device counts no pending command.
  auto listed = find_by_id(command_list(f.n, f.op.token, f.dev.id), doomed_id);
  REQUIRE(listed.is_object());
  CHECK(listed["status"] == "cancelled");
  CHECK(listed["delivered_ms"].is_null());
  auto only = command_list(f.n, f.op.token, f.dev.id, "?status=cancelled");
  CHECK(ids_of(only) == std::vector<std::string>{doomed_id});
  auto detail = f.n.get("/api/v1/devices/" + f.dev.id, f.op.token);
  TROUPE_REQUIRE_STATUS(detail, 200);
  CHECK(detail.body["pending_commands"] == 0);

  // Past its time to live a command is expired, not cancellable, even
  // before anything has marked it so.
  auto brief = must_post_command(f.n, f.op.token, f.dev.id, "brief", 1);
  std::this_thread::sleep_for(1200ms);
  auto too_late = cancel(f.op.token, f.dev.id, brief["id"].get<std::string>());
  TROUPE_CHECK_ERROR(too_late, 409);
  CHECK(too_late.raw.find("expired") != std::string::npos);
  CHECK(find_by_id(command_list(f.n, f.op.token, f.dev.id),
                   brief["id"].get<std::string>())["status"]
        == "expired");

  // An admin may cancel too; a later login still leaves both out.
  auto third = must_post_command(f.n, f.op.token, f.dev.id, "reset");
  auto third_id = third["id"].get<std::string>();
  auto by_admin = cancel(f.n.admin_token(), f.dev.id, third_id);
  TROUPE_REQUIRE_STATUS(by_admin, 200);
  CHECK(by_admin.body["status"] == "cancelled");
  auto again = f.n.post("/api/v1/device/login",
                        {{"device_id", f.dev.id}, {"secret", f.dev.secret}});
  TROUPE_REQUIRE_STATUS(again, 200);
  CHECK(!contains(ids_of(again.body["commands"]), doomed_id));
  CHECK(!contains(ids_of(again.body["commands"]), third_id));
}

TEST_CASE("commands show in /metrics by what happened to them",
          "[commands][metrics]") {
  fixture f;
  auto count = [&](const std::string& series) {
    return metric_sum(f.n, series);
  };
  auto events = {"sent", "delivered", "done", "failed", "expired", "cancelled"};
  std::map<std::string, double> before;
  for (auto e : events)
    before[e] = count(std::string{"troupe_commands_total{event=\""} + e + "\"");
  auto waited = count("troupe_command_delivery_seconds_count");

  auto ok = must_post_command(f.n, f.op.token, f.dev.id, "a");
  auto bad = must_post_command(f.n, f.op.token, f.dev.id, "b");
  auto doomed = must_post_command(f.n, f.op.token, f.dev.id, "c");
  TROUPE_REQUIRE_STATUS(f.n.post("/api/v1/devices/" + f.dev.id + "/commands/"
                                   + doomed["id"].get<std::string>()
                                   + "/cancel",
                                 json::object(), f.op.token),
                        200);
  auto got = f.n.get("/api/v1/device/commands", f.dev.token);
  TROUPE_REQUIRE_STATUS(got, 200);
  REQUIRE(got.body["commands"].size() == 2);
  for (auto& [cmd, status] : {std::pair{ok, "done"}, std::pair{bad, "failed"}})
    TROUPE_REQUIRE_STATUS(
      f.n.post("/api/v1/device/commands/" + cmd["id"].get<std::string>()
                 + "/result",
               {{"status", status}}, f.dev.token),
      200);
  auto late = must_post_command(f.n, f.op.token, f.dev.id, "d", 1);
  std::this_thread::sleep_for(1500ms);
  CHECK(find_by_id(command_list(f.n, f.op.token, f.dev.id),
                   late["id"].get<std::string>())["status"]
        == "expired");

  std::map<std::string, double> want = {{"sent", 4},   {"delivered", 2},
                                        {"done", 1},   {"failed", 1},
                                        {"expired", 1}, {"cancelled", 1}};
  for (auto& [e, n] : want) {
    INFO(e);
    CHECK(count("troupe_commands_total{event=\"" + e + "\"") - before[e] >= n);
  }
  CHECK(count("troupe_command_delivery_seconds_count") - waited >= 2);
}

TEST_CASE("one command for many devices", "[commands][bulk]") {
  fixture f;
  auto second = make_device(f.n, f.tenant);
  auto stranger = make_device(f.n, make_tenant(f.n));
  auto unknown = unique_id("nodev");
  auto body = json{{"device_ids", {f.dev.id, unknown, second.id, stranger.id}},
                   {"name", "update"},
                   {"args", {{"version", "2.1"}}},
                   {"ttl_s", 600}};
  auto r = f.n.post("/api/v1/commands", body, f.op.token);
  TROUPE_REQUIRE_STATUS(r, 200);
  INFO(r.body.dump());
  CHECK(r.body["sent"] == 2);
  CHECK(r.body["failed"] == 2);
  auto& items = r.body["items"];
  REQUIRE(items.size() == 4);
  std::vector<int> statuses;
  for (auto& i : items)
    statuses.push_back(i["status"].get<int>());
  CHECK(statuses == std::vector<int>{201, 404, 201, 404});
  CHECK(items[1]["device_id"] == unknown);
  CHECK(items[1]["error"]["code"] == "not_found");
  CHECK(items[3]["device_id"] == stranger.id); // another tenant's: unseen
  // Each device of the tenant gets its own command.
  for (auto* d : {&f.dev, &second}) {
    auto idx = d == &f.dev ? 0 : 2;
    auto id = items[idx]["command"]["id"].get<std::string>();
    CHECK(items[idx]["command"]["status"] == "pending");
    auto got = f.n.get("/api/v1/device/commands", d->token);
    TROUPE_REQUIRE_STATUS(got, 200);
    auto cmd = find_by_id(got.body["commands"], id);
    REQUIRE(cmd.is_object());
    CHECK(cmd["name"] == "update");
    CHECK(cmd["args"] == json{{"version", "2.1"}});
  }
  auto theirs = f.n.get("/api/v1/device/commands", stranger.token);
  TROUPE_REQUIRE_STATUS(theirs, 200);
  CHECK(theirs.body["commands"] == json::array());
  // A viewer is refused as a whole; bad bodies are 400.
  auto viewer = make_user(f.n, "viewer", f.tenant);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/commands", body, viewer.token), 403);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/commands",
                              {{"device_ids", {f.dev.id, f.dev.id}},
                               {"name", "x"}},
                              f.op.token),
                     400);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/commands",
                              {{"device_ids", json::array()}, {"name", "x"}},
                              f.op.token),
                     400);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/commands", body, ""), 401);
}

TEST_CASE("one command for 1,000 devices", "[commands][bulk]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  std::vector<std::string> wanted;
  auto prefix = unique_id("bk");
  for (int i = 0; i < 1000; ++i)
    wanted.push_back(prefix + "-" + std::to_string(i));
  auto creds = n.register_devices(n.admin_token(), wanted, tenant);
  json all = json::array();
  for (auto& c : creds)
    all.push_back(c.id);
  auto r = n.post("/api/v1/commands", {{"device_ids", all}, {"name", "sync"}},
                  op.token);
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK(r.body["sent"] == 1000);
  CHECK(r.body["failed"] == 0);
  REQUIRE(r.body["items"].size() == 1000);
  for (size_t i = 0; i < creds.size(); i += 97)
    CHECK(r.body["items"][i]["device_id"] == creds[i].id);
  // Stored: one pending command per device.
  CHECK(n.db()->query("SELECT count(DISTINCT device_id) FROM commands c"
                      " JOIN devices d ON d.id = c.device_id"
                      " WHERE d.tenant = '" + tenant
                      + "' AND c.name = 'sync' AND c.status = 'pending'")[0][0]
        == "1000");
}

namespace {

/// prefix-0 .. prefix-(n-1).
std::vector<std::string> numbered(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back(prefix + "-" + std::to_string(i));
  return out;
}

/// Devices of `tenant` with a pending command `name`, sorted.
std::vector<std::string> pending_with(node& n, const std::string& tenant,
                                      const std::string& name) {
  std::vector<std::string> out;
  for (auto& row :
       n.db()->query("SELECT c.device_id FROM commands c"
                     " JOIN devices d ON d.id = c.device_id WHERE d.tenant = '"
                     + tenant + "' AND c.name = '" + name
                     + "' AND c.status = 'pending' ORDER BY 1"))
    out.push_back(row[0]);
  return out;
}

} // namespace

TEST_CASE("one command for every device a filter matches", "[commands][bulk]") {
  fixture f;
  auto prefix = unique_id("flt");
  std::vector<std::string> ids = {prefix + "-a", prefix + "-b", prefix + "-c"};
  auto creds = f.n.register_devices(f.n.admin_token(), ids, f.tenant);
  // Another tenant's device under the same prefix is never reached.
  auto other = make_tenant(f.n);
  f.n.register_devices(f.n.admin_token(), {prefix + "-x"}, other);
  auto token = f.n.device_login(creds[0].id, creds[0].secret);
  TROUPE_REQUIRE_STATUS(post_telemetry(f.n, token, {{"values", {{"t", 1}}}}),
                        202);
  REQUIRE(eventually(
    [&] {
      auto r = f.n.get("/api/v1/devices?online=true&q=" + prefix, f.op.token);
      return r.status == 200 && list_items(r).size() == 1;
    },
    10s));

  auto send = [&](const json& filter, const std::string& name) {
    auto r = f.n.post("/api/v1/commands",
                      {{"filter", filter}, {"name", name}, {"ttl_s", 600}},
                      f.op.token);
    TROUPE_REQUIRE_STATUS(r, 200);
    INFO(r.body.dump());
    CHECK(r.body["failed"] == 0);
    CHECK(r.body["items"] == json::array()); // only failures are listed
    CHECK(r.body["sent"] == r.body["matched"]);
    return r.body["matched"].get<int>();
  };
  CHECK(send({{"q", prefix}}, "update") == 3);
  CHECK(pending_with(f.n, f.tenant, "update") == ids);
  CHECK(pending_with(f.n, other, "update").empty());
  CHECK(send({{"q", prefix}, {"online", true}}, "wake") == 1);
  CHECK(pending_with(f.n, f.tenant, "wake")
        == std::vector<std::string>{ids[0]});
  CHECK(send({{"q", prefix}, {"online", false}}, "sleep") == 2);
  CHECK(pending_with(f.n, f.tenant, "sleep")
        == std::vector<std::string>(ids.begin() + 1, ids.end()));
  CHECK(send({{"q", unique_id("none")}}, "nothing") == 0);
  // The device that is on line has its command at once.
  auto got = f.n.get("/api/v1/device/commands", token);
  TROUPE_REQUIRE_STATUS(got, 200);
  std::set<std::string> names;
  for (auto& c : got.body["commands"])
    names.insert(c["name"].get<std::string>());
  CHECK(names == std::set<std::string>{"update", "wake"});

  auto viewer = make_user(f.n, "viewer", f.tenant);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/commands",
                              {{"filter", {{"q", prefix}}}, {"name", "x"}},
                              viewer.token),
                     403);
  for (auto bad : {json{{"filter", {{"q", prefix}}},
                        {"device_ids", {ids[0]}},
                        {"name", "x"}},
                   json{{"filter", {{"q", 5}}}, {"name", "x"}},
                   json{{"filter", {{"online", "yes"}}}, {"name", "x"}},
                   json{{"filter", {{"tenant", other}}}, {"name", "x"}},
                   json{{"filter", "all"}, {"name", "x"}}}) {
    INFO(bad.dump());
    TROUPE_CHECK_ERROR(f.n.post("/api/v1/commands", bad, f.op.token), 400);
  }
}

TEST_CASE("a filter that matches more than 10,000 devices is refused",
          "[commands][bulk]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto prefix = unique_id("many");
  auto ids = numbered(prefix, 10'000);
  n.register_devices(n.admin_token(), ids, tenant);
  n.register_devices(n.admin_token(), {prefix + "x"}, tenant);
  auto r = n.post("/api/v1/commands",
                  {{"filter", json::object()}, {"name", "sync"}}, op.token);
  TROUPE_CHECK_ERROR(r, 400);
  CHECK(r.body["error"]["message"].get<std::string>().find("10000")
        != std::string::npos);
  CHECK(pending_with(n, tenant, "sync").empty()); // nothing was sent
  // Narrowed to 10,000, it goes; the node stays ready meanwhile (the sends
  // do not crowd out the database queue its probe waits in).
  std::atomic<bool> sending{true};
  std::vector<int> ready;
  std::thread probe([&] {
    while (sending) {
      ready.push_back(n.get("/readyz").status);
      std::this_thread::sleep_for(100ms);
    }
  });
  r = n.post("/api/v1/commands",
             {{"filter", {{"q", prefix + "-"}}}, {"name", "sync"}}, op.token);
  sending = false;
  probe.join();
  TROUPE_REQUIRE_STATUS(r, 200);
  CHECK(r.body["matched"] == 10'000);
  CHECK(r.body["sent"] == 10'000);
  CHECK(r.body["items"] == json::array());
  CHECK(pending_with(n, tenant, "sync").size() == 10'000);
  CHECK(std::count(ready.begin(), ready.end(), 200)
        == static_cast<long>(ready.size()));
}

TEST_CASE("a command for a device deleted meanwhile is 404, never 500",
          "[commands]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto prefix = unique_id("gone");
  auto ids = numbered(prefix, 20);
  n.register_devices(n.admin_token(), ids, tenant);
  std::thread admin([&] {
    for (auto& id : ids) {
      std::this_thread::sleep_for(5ms);
      n.del("/api/v1/admin/devices/" + id, n.admin_token());
    }
  });
  std::map<int, int> statuses;
  for (int round = 0; round < 3; ++round)
    for (auto& id : ids)
      ++statuses[post_command(n, op.token, id, {{"name", "x"}}).status];
  admin.join();
  INFO("201 x " << statuses[201] << ", 404 x " << statuses[404]);
  CHECK(statuses[201] + statuses[404] == 60);
}

TEST_CASE("a command sent while an admin changes the device is answered",
          "[commands]") {
  // A PATCH resets the device's actor; a command it was storing meanwhile
  // gets its answer (201), not a dropped reply that times out although the
  // command was stored.
  fixture f;
  std::atomic<bool> stop{false};
  std::atomic<int> patches{0};
  std::thread admin([&] {
    for (int i = 0; !stop; ++i) {
      f.n.patch("/api/v1/admin/devices/" + f.dev.id,
                {{"name", "renamed " + std::to_string(i)}}, f.n.admin_token());
      ++patches;
    }
  });
  std::vector<int> statuses;
  for (int i = 0; i < 30; ++i)
    statuses.push_back(
      post_command(f.n, f.op.token, f.dev.id,
                   {{"name", "c" + std::to_string(i)}, {"ttl_s", 600}})
        .status);
  stop = true;
  admin.join();
  INFO(patches.load() << " patches");
  CHECK(patches.load() > 0);
  CHECK(std::count(statuses.begin(), statuses.end(), 201) == 30);
  auto stored = f.n.db()->query("SELECT count(*) FROM commands WHERE"
                                " device_id = '" + f.dev.id + "'");
  CHECK(stored[0][0] == "30");
}

TEST_CASE("a bulk command answers within the request timeout although its "
          "writes wait",
          "[commands][bulk]") {
  // Every insert waits on a table lock for longer than a request may take:
  // the answer is still the 200 with an item per device (503: not known
  // to be stored), not a 503 for the whole request.
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto ids = numbered(unique_id("slow"), 300); // more than one window of 128
  n.register_devices(n.admin_token(), ids, tenant);
  std::atomic<bool> locked{false};
  std::thread holder([&] {
    locked = true;
    n.db()->query("BEGIN; LOCK TABLE commands IN EXCLUSIVE MODE;"
                  " SELECT pg_sleep(13); COMMIT");
  });
  while (!locked)
    std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(500ms); // the lock is taken
  auto r = n.post("/api/v1/commands",
                  {{"device_ids", ids}, {"name", "late"}}, op.token);
  holder.join();
  TROUPE_REQUIRE_STATUS(r, 200);
  INFO(r.body.dump().substr(0, 400));
  REQUIRE(r.body["items"].size() == ids.size());
  CHECK(r.body["failed"] == ids.size());
  for (auto& item : r.body["items"])
    CHECK(item["status"] == 503);
}
