// The user side of API.md: login, logout, me; the device list, a device's
// detail, its history and its commands, one device's or many devices' at
// once.

#include "http/routes.hpp"

#include <mutex>

#include <caf/all.hpp>

#include "actors/context.hpp"
#include "actors/roles.hpp"
#include "actors/errc.hpp"
#include "http/call.hpp"
#include "http/client_address.hpp"
#include "http/logger.hpp"
#include "http/pages.hpp"
#include "http/parse.hpp"
#include "http/probe.hpp"
#include "http/render.hpp"
#include "runtime/failure_window.hpp"
#include "runtime/metrics.hpp"
#include "storage/crypto.hpp"

namespace troupe::http {

namespace {

using json = nlohmann::json;

void login(const call_ptr& c) {
  auto body = c->json_body();
  if (!body)
    return;
  auto u = body->is_object() ? body->find("username") : body->end();
  auto p = body->is_object() ? body->find("password") : body->end();
  if (u == body->end() || !u->is_string() || p == body->end()
      || !p->is_string())
    return c->fail(api_error{400, "invalid_request",
                             "username and password (strings) are required"});
  auto name = u->get<std::string>();
  auto pw = p->get<std::string>();
  guarded_login(c, "user", [c, name, pw](auto k) {
    if (!valid_id(name) || pw.size() > 1024)
      return k(caf::make_error(actors::errc::unauthorized,
                               "invalid username or password"));
    c->ask_entity_result(
      c->env().users, name, actors::user_login{name, pw, c->req_id()},
      [c, k](caf::expected<actors::user_login_reply> r) {
        if (!r)
          return k(r.error());
        c->add_header("Set-Cookie", "troupe_session=" + r->token
                                      + "; HttpOnly; SameSite=Strict; "
                                        "Path=/");
        k(json{{"token", r->token}, {"user", user_json(r->user)}});
      });
  });
}

void logout(const call_ptr& c) {
  auto token = c->session_token();
  if (!token)
    return;
  auto key = storage::crypto::keyed_hash(c->env().secret_key, *token);
  c->ask_entity(
    c->env().sessions, key, actors::logout_atom::value, [c](actors::done&) {
      c->add_header("Set-Cookie", "troupe_session=; HttpOnly; "
                                  "SameSite=Strict; Path=/; Max-Age=0");
      c->reply(204, {});
    });
}

void me(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    c->reply(200,
             user_json(actors::user_info{who.username, who.role, who.tenant}));
  });
}

/// POST /api/v1/me/password: the user's own password, checked against the
/// current one (a wrong one is 403 wrong_password and counts as a failed
/// login for the username); the asking session stays, others end.
void change_password(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto body = c->json_body();
    if (!body)
      return;
    // The current password is whatever was set, maybe before today's
    // length rule (TROUPE_ADMIN_PASSWORD): only the new one is checked.
    auto cur = body->is_object() ? body->find("current_password")
                                 : body->end();
    if (cur == body->end() || !cur->is_string() || cur->get_ref<const std::string&>().empty()
        || cur->get_ref<const std::string&>().size() > 1024)
      return c->fail(api_error{400, "invalid_request",
                               "current_password is required (a string)"});
    auto next = parse_password(*body, "new_password");
    if (auto e = std::get_if<api_error>(&next))
      return c->fail(*e);
    auto token = c->session_token();
    if (!token)
      return;
    actors::change_password req{
      cur->get<std::string>(), std::get<std::string>(next),
      storage::crypto::keyed_hash(c->env().secret_key, *token), c->req_id()};
    c->ask_entity_result(
      c->env().users, who.username, std::move(req),
      [c](caf::expected<actors::done> r) {
        if (r)
          return c->reply(200, {{"ok", true}});
        if (r.error() == actors::errc::forbidden)
          return c->fail(api_error{403, "wrong_password",
                                   "the current password is wrong"});
        c->fail(r.error());
      });
  });
}

void devices(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    actors::list_devices req;
    req.who = who;
    req.q = c->query("q").value_or("");
    if (!valid_search(req.q))
      return c->fail(api_error{400, "invalid_request",
                               "q must be at most 128 printable "
                               "characters"});
    if (auto v = c->query("online")) {
      if (*v != "true" && *v != "false")
        return c->fail(api_error{400, "invalid_request",
                                 "online must be true or false"});
      req.online = *v == "true" ? 1 : 0;
    }
    if (!page_params(*c, 'd', req.limit, req.after))
      return;
    c->ask(
      c->env().fleet, req, [c](actors::device_page& r) {
        auto items = json::array();
        for (auto& v : r.items)
          items.push_back(device_json(v, false));
        auto body = page_body(std::move(items), r.next, 'd');
        if (r.partial)
          body["partial"] = true;
        c->reply(200, std::move(body));
      });
  });
}

void device(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    c->ask_entity(
      c->env().devices, *id, actors::get_device{who},
      [c](actors::device_view& v) { c->reply(200, device_json(v, true)); });
  });
}

void history(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    actors::history h;
    h.who = who;
    h.metric = c->query("metric").value_or("");
    if (!valid_id(h.metric))
      return c->fail(api_error{400, "invalid_request",
                               "metric is required and must be a valid "
                               "metric name"});
    auto now = actors::now_ms();
    auto to = time_param(*c, "to", now + 86'400'000);
    auto from = time_param(*c, "from", 0);
    if (!from || !to)
      return;
    if (*from > *to)
      return c->fail(api_error{400, "invalid_request",
                               "from must not be after to"});
    h.from_ms = *from;
    h.to_ms = *to;
    auto lim = parse_limit(c->query("limit").value_or(""), 1000, 100000);
    if (auto e = std::get_if<api_error>(&lim))
      return c->fail(*e);
    h.limit = std::get<int64_t>(lim);
    if (auto s = c->query("step")) {
      auto step = parse_step(*s);
      if (!step)
        return c->fail(api_error{400, "invalid_request",
                                 "step must look like 60s, 5m, 1h or 1d"});
      h.step_ms = *step;
    }
    c->ask_entity(
      c->env().devices, *id, h, [c, step = h.step_ms](actors::history_reply& r) {
        auto pts = json::array();
        if (r.bucketed) {
          for (auto& b : r.buckets)
            pts.push_back({static_cast<int64_t>(b[0]),
                           static_cast<int64_t>(b[1]), b[2], b[3], b[4]});
          // Buckets replace the raw points, under the same key.
          return c->reply(200, {{"metric", r.metric},
                                {"step_ms", step},
                                {"points", pts}});
        }
        for (auto& [ts, v] : r.points)
          pts.push_back({ts, v});
        c->reply(200, {{"metric", r.metric}, {"points", pts}});
      });
  });
}

void post_command(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    auto body = c->json_body();
    if (!body)
      return;
    auto pc = parse_post_command(*body);
    if (auto e = std::get_if<api_error>(&pc))
      return c->fail(*e);
    auto& req = std::get<actors::post_command>(pc);
    req.who = who;
    c->ask_entity(
      c->env().devices, *id, req,
      [c](actors::command& cmd) { c->reply(201, user_command_json(cmd)); });
  });
}

/// One command on its way to many devices (send_to_devices). Owned by the
/// answers still to come, so a call whose answers never come is released
/// (and answers 503 from ~call) instead of leaking.
struct fan_out {
  std::mutex m;
  std::vector<std::string> ids;
  actors::post_command cmd;
  bool every = true; // an item per device, or only the failed ones
  std::chrono::steady_clock::time_point deadline;
  std::vector<json> items;
  size_t next = 0; // the next device to ask
  size_t left = 0; // answers still to come
  size_t sent = 0;
};

/// At most this many devices of one bulk command are asked at a time: each
/// send is a database write, and ten thousand at once would fill the
/// database queue that every other request (and the readiness probe)
/// waits in.
constexpr size_t bulk_window = 128;
/// A filter's answer lists at most this many failed devices.
constexpr size_t max_failed_items = 100;

/// Records device i's answer; the last one answers the call.
void record(const call_ptr& c, fan_out& f, size_t i,
            const caf::expected<actors::command>& r) {
  json item = {{"device_id", f.ids[i]}};
  if (r) {
    item["status"] = 201;
    item["command"] = user_command_json(*r);
  } else {
    auto e = to_api_error(r.error());
    item["status"] = e.status;
    item["error"] = {{"code", e.code}, {"message", e.message}};
  }
  f.sent += r ? 1 : 0;
  if (f.every)
    f.items[i] = std::move(item);
  else if (!r && f.items.size() < max_failed_items)
    f.items.push_back(std::move(item));
  if (--f.left > 0)
    return;
  auto total = f.ids.size();
  json body = {{"sent", f.sent}, {"failed", total - f.sent}};
  if (!f.every)
    body["matched"] = total;
  body["items"] = std::move(f.items);
  c->reply(200, std::move(body));
}

/// Asks device i, within what is left of the whole request's time; its
/// answer asks the next device still waiting. Past the deadline the devices
/// not asked yet fail (503) without being asked.
void ask_one(const call_ptr& c, const std::shared_ptr<fan_out>& f, size_t i) {
  using namespace std::chrono;
  auto left = duration_cast<milliseconds>(f->deadline - steady_clock::now());
  if (left <= milliseconds(0)) {
    // This device and every one not asked yet.
    auto late = actors::make_actor_error(actors::errc::unavailable,
                                         "not sent: the request ran out of "
                                         "time; send to this device again");
    std::lock_guard<std::mutex> guard{f->m};
    record(c, *f, i, late);
    while (f->next < f->ids.size())
      record(c, *f, f->next++, late);
    return;
  }
  c->ask_entity_result(
    c->env().devices, f->ids[i], f->cmd,
    [c, f, i](caf::expected<actors::command> r) {
      std::optional<size_t> then;
      {
        std::lock_guard<std::mutex> guard{f->m};
        record(c, *f, i, r);
        if (f->next < f->ids.size())
          then = f->next++;
      }
      if (then)
        ask_one(c, f, *then);
    },
    left);
}

/// Sends `cmd` to each device of `ids` through its own device actor (as
/// POST /devices/{id}/commands), bulk_window at a time, all within the
/// request's timeout, and answers 200 with {sent, failed, items}: per device
/// 201 and the command, or the status and error its own POST would have
/// had. `every` keeps an item per device, in the order given; otherwise
/// only the failed ones (the first 100), and `matched` says how many
/// devices there were.
void send_to_devices(const call_ptr& c, std::vector<std::string> ids,
                     const actors::post_command& cmd, bool every) {
  auto f = std::make_shared<fan_out>();
  f->ids = std::move(ids);
  f->cmd = cmd;
  f->every = every;
  // The request's own time, less a margin: the devices not answered by
  // then fail in the 200, before the edge gives up on the whole request.
  auto t = c->request_timeout();
  f->deadline = c->started() + t - std::min<std::chrono::milliseconds>(
                                      t / 10, std::chrono::seconds(1));
  f->items.resize(every ? f->ids.size() : 0);
  f->left = f->ids.size();
  if (f->ids.empty()) {
    c->reply(200, {{"sent", 0}, {"failed", 0}, {"matched", 0},
                   {"items", json::array()}});
    return;
  }
  size_t first = 0;
  {
    std::lock_guard<std::mutex> guard{f->m};
    first = std::min(bulk_window, f->ids.size());
    f->next = first;
  }
  for (size_t i = 0; i < first; ++i)
    ask_one(c, f, i);
}

/// The ids of every device the caller sees that matches `f`, page by page
/// through the fleet actor (as GET /devices lists them), then `k(ids)`.
/// More than max_filter_devices is 400; with `online` set, a data shard
/// that does not answer is 503 (which of its devices are online is not
/// known).
void select_devices(const call_ptr& c, actors::list_devices req,
                    std::shared_ptr<std::vector<std::string>> ids,
                    std::function<void(std::vector<std::string>)> k) {
  c->ask(c->env().fleet, req,
         [c, req, ids, k](actors::device_page& page) mutable {
           if (page.partial && req.online >= 0)
             return c->fail(api_error{503, "unavailable",
                                      "a data shard does not answer: which "
                                      "of its devices are online is not "
                                      "known; retry",
                                      5});
           for (auto& v : page.items)
             ids->push_back(std::move(v.id));
           if (ids->size() > max_filter_devices)
             return c->fail(api_error{
               400, "invalid_request",
               "the filter matches more than "
                 + std::to_string(max_filter_devices)
                 + " devices: narrow it (q, online) or name device_ids"});
           if (page.next.empty())
             return k(std::move(*ids));
           req.after = std::move(page.next);
           select_devices(c, std::move(req), ids, std::move(k));
         });
}

/// POST /commands: one command to each of up to 1,000 devices named by
/// device_ids, or to every device (up to 10,000) the caller sees that
/// matches a filter, each through its own device actor, at once.
void post_commands(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    if (!actors::may_operate(who))
      return c->fail(api_error{403, "forbidden",
                               "role " + who.role + " may not send commands"});
    auto body = c->json_body();
    if (!body)
      return;
    auto parsed = parse_bulk_command(*body);
    if (auto e = std::get_if<api_error>(&parsed))
      return c->fail(*e);
    auto& bulk = std::get<bulk_command>(parsed);
    bulk.command.who = who;
    if (!bulk.filter)
      return send_to_devices(c, std::move(bulk.device_ids), bulk.command,
                             true);
    actors::list_devices req;
    req.who = who;
    req.q = bulk.filter->q;
    req.online = bulk.filter->online;
    req.limit = 1000;
    select_devices(c, std::move(req),
                   std::make_shared<std::vector<std::string>>(),
                   [c, cmd = bulk.command](std::vector<std::string> ids) {
                     if (auto e
                         = bulk_args_error(cmd.args_json.size(), ids.size()))
                       return c->fail(*e);
                     send_to_devices(c, std::move(ids), cmd, false);
                   });
  });
}

void cancel_command(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param(0);
    if (!id)
      return;
    auto cid = c->id_param(1);
    if (!cid)
      return;
    c->ask_entity(c->env().devices, *id, actors::cancel_command{who, *cid},
                  [c](actors::command& cmd) {
                    c->reply(200, user_command_json(cmd));
                  });
  });
}

void list_commands(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    actors::list_commands lc;
    lc.who = who;
    lc.status = c->query("status").value_or("");
    static const std::vector<std::string> states
      = {"",       "pending", "delivered", "done",
         "failed", "expired", "cancelled"};
    if (std::find(states.begin(), states.end(), lc.status) == states.end())
      return c->fail(api_error{400, "invalid_request",
                               "status must be pending, delivered, done, "
                               "failed, expired or cancelled"});
    auto lim = parse_limit(c->query("limit").value_or(""), 100, 1000);
    if (auto e = std::get_if<api_error>(&lim))
      return c->fail(*e);
    lc.limit = std::get<int64_t>(lim);
    if (auto cur = c->query("cursor"); cur && !cur->empty()) {
      auto pos = decode_cursor(*cur);
      auto seq = pos ? parse_int64(pos->substr(2)) : std::nullopt;
      if (!pos || (*pos)[0] != 'c' || !seq)
        return c->fail(api_error{400, "invalid_cursor", "invalid cursor"});
      lc.after_seq = *seq;
    }
    c->ask_entity(
      c->env().devices, *id, lc, [c](actors::command_page& r) {
        auto items = json::array();
        for (auto& cmd : r.items)
          items.push_back(user_command_json(cmd));
        c->reply(200, {{"items", items},
                       {"next_cursor",
                        r.next_seq < 0
                          ? json(nullptr)
                          : json(encode_cursor("c:"
                                               + std::to_string(r.next_seq)))}});
      });
  });
}

} // namespace

void guarded_login(const call_ptr& c, const char* kind,
                   login_attempt attempt) {
  auto& env = c->env();
  auto addr = c->client_address();
  auto now = address_throttle::clock::now();
  if (auto wait = env.throttle->blocked_for(addr, now); wait.count() > 0) {
    runtime::metrics()
      .get_counter("troupe_login_throttled_total",
                   "Logins refused with 429 (too many failures)",
                   std::string{"kind=\""} + kind + "\",scope=\"address\"")
      .inc();
    log().warn("req={} {} login throttled for address={}", c->req_id(), kind,
               addr);
    return c->fail(api_error{429, "too_many_requests",
                             "too many failed logins from this address; "
                             "try again later",
                             static_cast<int>(runtime::retry_after_s(wait))});
  }
  attempt([c, addr](caf::expected<nlohmann::json> r) {
    if (r)
      return c->reply(200, *r);
    auto e = to_api_error(r.error());
    // Counted when answered: a slow password check must not age it.
    if (e.status == 401)
      c->env().throttle->fail(addr, address_throttle::clock::now());
    c->fail(e);
  });
}

void add_user_routes(router& r) {
  r.add("POST", "/api/v1/login", login);
  r.add("POST", "/api/v1/logout", logout);
  r.add("GET", "/api/v1/me", me);
  r.add("POST", "/api/v1/me/password", change_password);
  r.add("GET", "/api/v1/devices", devices);
  r.add("GET", "/api/v1/devices/{id}", device);
  r.add("GET", "/api/v1/devices/{id}/telemetry", history);
  r.add("POST", "/api/v1/devices/{id}/commands", post_command);
  r.add("GET", "/api/v1/devices/{id}/commands", list_commands);
  r.add("POST", "/api/v1/devices/{id}/commands/{command}/cancel",
        cancel_command);
  r.add("POST", "/api/v1/commands", post_commands);
}

} // namespace troupe::http
