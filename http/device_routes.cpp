// The device side of API.md: login, telemetry (JSON or MessagePack),
// long-poll for commands, command results.

#include "http/routes.hpp"

#include <caf/all.hpp>

#include "actors/context.hpp"
#include "actors/errc.hpp"
#include "http/call.hpp"
#include "http/client_address.hpp"
#include "http/logger.hpp"
#include "http/parse.hpp"
#include "http/probe.hpp"
#include "http/render.hpp"
#include "runtime/failure_window.hpp"
#include "runtime/metrics.hpp"

namespace troupe::http {

namespace {

using json = nlohmann::json;

void login(const call_ptr& c) {
  auto body = c->json_body();
  if (!body)
    return;
  auto id = body->is_object() ? body->find("device_id") : body->end();
  auto secret = body->is_object() ? body->find("secret") : body->end();
  if (id == body->end() || !id->is_string() || secret == body->end()
      || !secret->is_string())
    return c->fail(api_error{400, "invalid_request",
                             "device_id and secret (strings) are required"});
  auto dev = id->get<std::string>();
  guarded_login(c, "device", [c, dev, s = secret->get<std::string>()](
                               std::function<void(caf::expected<json>)> k) {
    if (!valid_id(dev))
      return k(caf::make_error(actors::errc::unauthorized,
                               "invalid device id or secret"));
    c->ask_entity_result(
      c->env().devices, dev, actors::device_login{s, c->req_id()},
      [k](caf::expected<actors::device_login_reply> r) {
        if (!r)
          return k(r.error());
        k(json{{"token", r->token},
               {"expires_in", r->expires_in_s},
               {"commands", commands_json(r->commands)}});
      });
  });
}

void telemetry(const call_ptr& c) {
  std::string token;
  auto dev = c->device(token);
  if (!dev)
    return;
  auto& env = c->env();
  telemetry_limits lim{env.ingest.max_points_per_request,
                       env.ingest.max_age_days * 86'400'000,
                       env.ingest.max_future_s * 1000, env.cfg.max_json_depth};
  auto mt = c->media_type();
  parsed<actors::telemetry> t = api_error{};
  if (mt.empty() || mt == "application/json") {
    t = parse_telemetry_json(c->req().body, lim, actors::now_ms());
  } else if (mt == "application/msgpack" || mt == "application/x-msgpack") {
    t = parse_telemetry_msgpack(c->req().body, lim, actors::now_ms());
  } else {
    return c->fail(api_error{415, "unsupported_media_type",
                             "expected application/json or "
                             "application/msgpack, got "
                               + (printable(mt) ? mt : std::string{"?"})});
  }
  if (auto e = std::get_if<api_error>(&t))
    return c->fail(*e);
  auto& msg = std::get<actors::telemetry>(t);
  msg.token = std::move(token);
  msg.req_id = c->req_id();
  c->ask_entity(
    env.devices, *dev, std::move(msg), [c](actors::telemetry_reply& r) {
      if (r.duplicate)
        return c->reply(200, {{"accepted", 0}, {"duplicate", true}});
      c->reply(202, {{"accepted", r.accepted},
                     {"commands", commands_json(r.commands)}});
    });
}

/// Holds one of the node's long-poll slots until the poll is answered.
class poll_slot {
public:
  explicit poll_slot(edge_env& env) : env_(env) {
    env_.probe->long_polls.add(1);
  }
  ~poll_slot() {
    --env_.long_polls;
    env_.probe->long_polls.add(-1);
  }
  poll_slot(const poll_slot&) = delete;
  poll_slot& operator=(const poll_slot&) = delete;

private:
  edge_env& env_;
};

void poll(const call_ptr& c) {
  std::string token;
  auto dev = c->device(token);
  if (!dev)
    return;
  auto& env = c->env();
  int64_t wait = 0;
  if (auto w = c->query("wait")) {
    auto n = parse_int64(*w);
    if (!n || *n < 0 || *n > 60)
      return c->fail(api_error{400, "invalid_request",
                               "wait must be an integer from 0 to 60"});
    wait = *n;
  }
  if (env.draining)
    wait = 0;
  std::shared_ptr<poll_slot> slot;
  if (wait > 0) {
    if (++env.long_polls > static_cast<int64_t>(env.cfg.max_long_polls)) {
      --env.long_polls;
      return c->fail(api_error{429, "too_many_requests",
                               "too many devices are waiting; poll again "
                               "later",
                               5});
    }
    slot = std::make_shared<poll_slot>(env);
    // A client that goes away releases its place in the device at once.
    c->on_cancel([devices = env.devices.handle, id = *dev, rid = c->req_id()] {
      caf::anon_send(devices, runtime::route_atom::value, id,
                     caf::make_message(actors::cancel_poll{rid}));
    });
  }
  c->ask_entity(
    env.devices, *dev, actors::poll_commands{token, wait * 1000, c->req_id()},
    [c, slot](actors::commands_reply& r) {
      c->reply(200, {{"commands", commands_json(r.commands)}});
    },
    std::chrono::milliseconds(env.cfg.request_timeout_ms + wait * 1000));
}

void result(const call_ptr& c) {
  std::string token;
  auto dev = c->device(token);
  if (!dev)
    return;
  auto body = c->json_body();
  if (!body)
    return;
  auto st = body->is_object() ? body->find("status") : body->end();
  if (st == body->end() || !st->is_string()
      || (*st != "done" && *st != "failed"))
    return c->fail(api_error{400, "invalid_request",
                             "status must be \"done\" or \"failed\""});
  std::string result = "null";
  if (auto r = body->find("result"); r != body->end())
    result = r->dump();
  auto& cid = c->param(0);
  if (cid.size() > 128 || !printable(cid))
    return c->fail(api_error{404, "not_found", "no such command"});
  auto status = st->get<std::string>();
  c->ask_entity(
    c->env().devices, *dev,
    actors::command_result{token, cid, status, result, c->req_id()},
    [c, cid, status](actors::done&) {
      c->reply(200, {{"id", cid}, {"status", status}});
    });
}

} // namespace

void add_device_routes(router& r) {
  r.add("POST", "/api/v1/device/login", login);
  r.add("POST", "/api/v1/device/telemetry", telemetry);
  r.add("GET", "/api/v1/device/commands", poll);
  r.add("POST", "/api/v1/device/commands/{id}/result", result);
}

} // namespace troupe::http
