// Hostile requests: each of these once crashed the node (stack overflow in
// a recursive decoder or serializer) or answered 500. Each must now get a
// 4xx with API.md's error body, and the node must keep serving.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <msgpack.hpp>

using namespace troupe::test;

namespace {

struct fixture {
  node& n = shared_node();
  std::string admin = n.admin_token();
  std::string tenant = make_tenant(n);
  device_login_info dev = make_device(n, tenant);
};

/// `depth` nested one-element arrays around nil: 0x91 x depth, then 0xc0.
std::string nested_arrays(size_t depth) {
  return std::string(depth, '\x91') + '\xc0';
}

/// `depth` nested one-entry maps {"a": {"a": ... nil}}.
std::string nested_maps(size_t depth) {
  std::string out;
  for (size_t i = 0; i < depth; ++i)
    out += "\x81\xa1" "a";
  return out + '\xc0';
}

/// A MessagePack map {"values": {"t": 1.5}, <key>: <raw>}.
std::string values_and(const std::string& key, const std::string& raw) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{&buf};
  pk.pack_map(2);
  pk.pack(std::string{"values"});
  pk.pack_map(1);
  pk.pack(std::string{"t"});
  pk.pack(1.5);
  pk.pack(key);
  return std::string{buf.data(), buf.size()} + raw;
}

/// {"points": [<raw>]}
std::string points_holding(const std::string& raw) {
  return std::string{"\x81\xa6points\x91"} + raw;
}

/// JSON objects nested `depth` deep: {"a":{"a":...{}...}}.
std::string nested_objects(size_t depth) {
  std::string out;
  out.reserve(depth * 6 + 2);
  for (size_t i = 0; i < depth; ++i)
    out += "{\"a\":";
  out += "{}";
  out.append(depth, '}');
  return out;
}

response post_msgpack(const node& n, const std::string& token,
                      const std::string& body) {
  return n.request("POST", "/api/v1/device/telemetry", body,
                   "application/msgpack", {}, token, 60s);
}

/// The node still answers, and still stores telemetry.
void check_alive(fixture& f) {
  auto h = f.n.get("/healthz");
  INFO(h.describe());
  REQUIRE(h.status == 200);
  TROUPE_CHECK_STATUS(
    post_telemetry(f.n, f.dev.token, {{"values", {{"alive", 1}}}}), 202);
}

} // namespace

TEST_CASE("deeply nested MessagePack is refused, not a crash",
          "[hostile][telemetry]") {
  fixture f;
  SECTION("100,000 nested arrays") {
    auto r = post_msgpack(f.n, f.dev.token, nested_arrays(100'000));
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(r.body["error"]["message"].get<std::string>().find("deeper")
          != std::string::npos);
  }
  SECTION("100,000 nested maps") {
    TROUPE_CHECK_ERROR(post_msgpack(f.n, f.dev.token, nested_maps(100'000)),
                       400);
  }
  SECTION("nesting inside points") {
    TROUPE_CHECK_ERROR(post_msgpack(f.n, f.dev.token,
                                    points_holding(nested_arrays(100'000))),
                       400);
    TROUPE_CHECK_ERROR(post_msgpack(f.n, f.dev.token,
                                    points_holding(nested_maps(100'000))),
                       400);
  }
  SECTION("nesting in an unknown extra field") {
    TROUPE_CHECK_ERROR(post_msgpack(f.n, f.dev.token,
                                    values_and("x", nested_arrays(100'000))),
                       400);
    TROUPE_CHECK_ERROR(post_msgpack(f.n, f.dev.token,
                                    values_and("x", nested_maps(100'000))),
                       400);
  }
  SECTION("a declared huge array or string that is not there") {
    // array32 of 2^32-1 elements, str32 of 2^32-1 bytes: refused by the
    // unpack limits, not allocated.
    TROUPE_CHECK_ERROR(
      post_msgpack(f.n, f.dev.token, std::string{"\xdd\xff\xff\xff\xff", 5}),
      400);
    TROUPE_CHECK_ERROR(
      post_msgpack(f.n, f.dev.token, std::string{"\xdb\xff\xff\xff\xff", 5}),
      400);
  }
  SECTION("moderate nesting in an extra field is still fine") {
    auto r = post_msgpack(f.n, f.dev.token,
                          values_and("x", nested_arrays(8)));
    TROUPE_CHECK_STATUS(r, 202);
  }
  check_alive(f);
}

TEST_CASE("deeply nested JSON in command args and results is a 400 naming "
          "the field",
          "[hostile][commands]") {
  fixture f;
  auto post_args = [&](const std::string& args) {
    return f.n.request("POST", "/api/v1/devices/" + f.dev.id + "/commands",
                       "{\"name\":\"deep\",\"args\":" + args + "}",
                       "application/json", {}, f.admin, 60s);
  };
  for (size_t depth : {100'000u, 20'000u, 33u}) {
    INFO("depth " << depth);
    auto r = post_args(nested_objects(depth));
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(r.body["error"]["message"].get<std::string>().rfind("args", 0)
          == 0);
  }
  // 32 levels are allowed (http.max_json_depth).
  auto ok = post_args(nested_objects(31));
  TROUPE_CHECK_STATUS(ok, 201);
  // The same in a result.
  auto cmd = f.n.get("/api/v1/device/commands", f.dev.token);
  REQUIRE(cmd.status == 200);
  REQUIRE(!cmd.body["commands"].empty());
  auto id = cmd.body["commands"][0]["id"].get<std::string>();
  auto result = f.n.request(
    "POST", "/api/v1/device/commands/" + id + "/result",
    "{\"status\":\"done\",\"result\":" + nested_objects(100'000) + "}",
    "application/json", {}, f.dev.token, 60s);
  TROUPE_CHECK_ERROR(result, 400);
  CHECK(result.body["error"]["message"].get<std::string>().rfind("result", 0)
        == 0);
  // Deep arrays in a telemetry JSON body too.
  auto deep = f.n.request("POST", "/api/v1/device/telemetry",
                          "{\"values\":{\"t\":1},\"x\":"
                            + std::string(100'000, '[')
                            + std::string(100'000, ']') + "}",
                          "application/json", {}, f.dev.token, 60s);
  TROUPE_CHECK_ERROR(deep, 400);
  check_alive(f);
}

TEST_CASE("NUL characters are refused with 400 naming the field",
          "[hostile]") {
  fixture f;
  auto dev_id = unique_id("nul");
  auto name = f.n.request("POST", "/api/v1/admin/devices",
                          "{\"id\":\"" + dev_id
                            + "\",\"tenant\":\"" + f.tenant
                            + "\",\"name\":\"a\\u0000b\"}",
                          "application/json", {}, f.admin);
  TROUPE_CHECK_ERROR(name, 400);
  CHECK(name.body["error"]["message"].get<std::string>().rfind("name", 0)
        == 0);
  auto bulk = f.n.request("POST", "/api/v1/admin/devices",
                          "[{\"id\":\"" + dev_id + "\",\"tenant\":\""
                            + f.tenant + "\",\"name\":\"ok\"},{\"id\":\"x"
                            + dev_id + "\",\"tenant\":\"" + f.tenant
                            + "\",\"name\":\"a\\u0000\"}]",
                          "application/json", {}, f.admin);
  TROUPE_CHECK_ERROR(bulk, 400);
  CHECK(bulk.body["error"]["message"].get<std::string>().rfind("[1].name", 0)
        == 0);
  auto args = f.n.request("POST", "/api/v1/devices/" + f.dev.id + "/commands",
                          "{\"name\":\"x\",\"args\":{\"k\":\"\\u0000\"}}",
                          "application/json", {}, f.admin);
  TROUPE_CHECK_ERROR(args, 400);
  CHECK(args.body["error"]["message"].get<std::string>().rfind("args", 0)
        == 0);
  auto key = f.n.request("POST", "/api/v1/devices/" + f.dev.id + "/commands",
                         "{\"name\":\"x\",\"args\":{\"\\u0000\":1}}",
                         "application/json", {}, f.admin);
  TROUPE_CHECK_ERROR(key, 400);
  // A result.
  auto cmd = f.n.post("/api/v1/devices/" + f.dev.id + "/commands",
                      {{"name", "nul"}}, f.admin);
  REQUIRE(cmd.status == 201);
  auto id = cmd.body["id"].get<std::string>();
  auto result = f.n.request(
    "POST", "/api/v1/device/commands/" + id + "/result",
    "{\"status\":\"done\",\"result\":{\"out\":\"\\u0000\"}}",
    "application/json", {}, f.dev.token);
  TROUPE_CHECK_ERROR(result, 400);
  // Query parameters and cursors that decode to control characters.
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/devices?q=%00", f.admin), 400);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/devices?cursor=ZDoA", f.admin), 400);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/alerts?cursor=YToA", f.admin), 400);
  check_alive(f);
}

TEST_CASE("Content-Encoding other than gzip or identity is 415",
          "[hostile]") {
  fixture f;
  auto body = json{{"values", {{"enc", 1}}}}.dump();
  for (auto coding : {"x-evil", "br", "deflate", "gzip, x-evil"}) {
    INFO("Content-Encoding: " << coding);
    auto r = f.n.request("POST", "/api/v1/device/telemetry", body,
                         "application/json", {{"Content-Encoding", coding}},
                         f.dev.token);
    TROUPE_CHECK_ERROR(r, 415);
  }
  auto identity = f.n.request("POST", "/api/v1/device/telemetry", body,
                              "application/json",
                              {{"Content-Encoding", "identity"}},
                              f.dev.token);
  TROUPE_CHECK_STATUS(identity, 202);
  check_alive(f);
}
