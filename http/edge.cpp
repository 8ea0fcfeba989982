#include "http/edge.hpp"

#include <atomic>
#include <cmath>
#include <chrono>
#include <functional>
#include <mutex>
#include <regex>
#include <thread>
#include <unordered_map>

#include <caf/all.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include "actors/analysis.hpp"
#include "actors/errc.hpp"
#include "actors/messages.hpp"
#include "cluster-config/config.hpp"
#include "http/client_address.hpp"
#include "http/errc.hpp"
#include "http/logger.hpp"
#include "http/parse.hpp"
#include "http/render.hpp"
#include "runtime/atoms.hpp"
#include "runtime/bridge.hpp"
#include "runtime/crash.hpp"
#include "runtime/errc.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node.hpp"
#include "storage/crypto.hpp"

namespace troupe::http {

namespace {

using json = nlohmann::json;
using namespace std::chrono;

int64_t now_ms() {
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

/// One request on its way through the edge.
struct exchange {
  const httplib::Request& req;
  httplib::Response& res;
  std::smatch match;
  std::string body;
  std::string req_id;
  std::string route;
  std::string method;
};

struct route {
  std::string method;
  std::regex pattern;
  std::string name;
  std::function<void(exchange&)> fn;
};

std::string gzip(const std::string& in) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                   Z_DEFAULT_STRATEGY)
      != Z_OK)
    return {};
  std::string out;
  out.resize(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  auto rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return rc == Z_STREAM_END ? out : std::string{};
}

bool accepts_gzip(const httplib::Request& req) {
  auto ae = req.get_header_value("Accept-Encoding");
  return ae.find("gzip") != std::string::npos;
}

std::string media_type(const httplib::Request& req) {
  auto ct = req.get_header_value("Content-Type");
  auto semi = ct.find(';');
  if (semi != std::string::npos)
    ct = ct.substr(0, semi);
  while (!ct.empty() && ct.back() == ' ')
    ct.pop_back();
  for (auto& c : ct)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ct;
}

std::string cookie_value(const httplib::Request& req, const std::string& name) {
  auto header = req.get_header_value("Cookie");
  size_t pos = 0;
  while (pos < header.size()) {
    auto end = header.find(';', pos);
    if (end == std::string::npos)
      end = header.size();
    auto part = header.substr(pos, end - pos);
    auto b = part.find_first_not_of(' ');
    if (b != std::string::npos)
      part = part.substr(b);
    if (part.rfind(name + "=", 0) == 0)
      return part.substr(name.size() + 1);
    pos = end + 1;
  }
  return {};
}

std::string bearer(const httplib::Request& req) {
  auto h = req.get_header_value("Authorization");
  if (h.size() > 7 && (h.rfind("Bearer ", 0) == 0 || h.rfind("bearer ", 0) == 0))
    return h.substr(7);
  return {};
}

/// The HTTP edge of one node. Handler threads are cpp-httplib's pool; each
/// request blocks its thread on one actor reply (runtime::ask).
class edge {
public:
  explicit edge(runtime::node& n)
    : node_(n),
      cfg_(n.cfg().http),
      throttle_(n.cfg().auth.max_failed_logins_per_address,
                std::chrono::seconds(n.cfg().auth.failed_login_window_s)) {
  }

  caf::error start();
  void stop();

private:
  // -- plumbing ---------------------------------------------------------------
  void add(const std::string& method, const std::string& pattern,
           const std::string& name, std::function<void(exchange&)> fn) {
    routes_.push_back({method, std::regex{pattern}, name, std::move(fn)});
  }
  void dispatch(const std::string& method, const httplib::Request& req,
                httplib::Response& res, const httplib::ContentReader* reader);
  void reply(exchange& x, int status, const json& body);
  void fail(exchange& x, const api_error& e);
  void fail(exchange& x, const caf::error& err) { fail(x, to_api_error(err)); }
  void observe(const std::string& route, const std::string& method,
               int status, double seconds);

  template <class T>
  caf::expected<T> ask(const caf::actor& dest, caf::message msg,
                       milliseconds timeout) {
    if (!dest)
      return actors::make_actor_error(actors::errc::unavailable,
                                      "node is not ready");
    return runtime::ask<T>(node_.system(), dest, timeout, std::move(msg));
  }
  template <class T>
  caf::expected<T> ask(const caf::actor& dest, caf::message msg) {
    return ask<T>(dest, std::move(msg),
                  milliseconds(cfg_.request_timeout_ms));
  }
  /// Sends `msg` to the virtual actor `key` of `region`. While the key's
  /// shard is moving between nodes the region answers `moved`; we retry
  /// with backoff within the request deadline, so a handoff shows as a
  /// little latency, not an error.
  template <class T, class M>
  caf::expected<T> ask_entity(const caf::actor& region, const std::string& key,
                              M msg,
                              std::optional<milliseconds> timeout = {}) {
    auto t = timeout.value_or(milliseconds(cfg_.request_timeout_ms));
    auto deadline = steady_clock::now() + milliseconds(cfg_.request_timeout_ms);
    auto inner = caf::make_message(std::move(msg));
    auto backoff = milliseconds(20);
    for (;;) {
      auto t0 = steady_clock::now();
      auto r = ask<T>(region,
                      caf::make_message(runtime::route_atom::value, key, inner),
                      t);
      if (auto map = node_.current_map();
          map && map->shards() > 0 && map->owner(map->shard_of(key)) != node_.id())
        remote_calls_->observe(
          duration<double>(steady_clock::now() - t0).count());
      if (r || r.error() != runtime::errc::moved
          || steady_clock::now() + backoff > deadline)
        return r;
      retries_->inc();
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, milliseconds(500));
    }
  }

  /// Reads `limit` (default 100, at most 1000) and `cursor` (an opaque
  /// position tagged `tag`); fails the exchange (400) on bad input.
  bool page_params(exchange& x, char tag, int64_t& limit, std::string& after);
  /// API.md's list body: {"items": ..., "next_cursor": ... | null}.
  static json page_body(json items, const std::string& next, char tag);

  /// Parses the JSON body; fails the exchange (400/415) when it cannot.
  std::optional<json> json_body(exchange& x);
  /// Authenticates a user; fails the exchange (401) when it cannot.
  std::optional<actors::caller> user(exchange& x);
  /// A device token's device id; fails the exchange (401) when malformed.
  std::optional<std::string> device_of(exchange& x, std::string& token);
  /// The {id} path parameter, validated (404 when it cannot be an id).
  std::optional<std::string> id_param(exchange& x, size_t i = 1);
  std::optional<actors::caller> admin(exchange& x);

  // -- routes -----------------------------------------------------------------
  void routes();
  void device_routes();
  void user_routes();
  void admin_routes();
  void ops_routes();
  void analysis_routes();

  runtime::node& node_;
  config::http_config cfg_;
  httplib::Server svr_;
  std::thread thread_;
  std::vector<route> routes_;
  /// Runs a login `attempt` under the per-address limit: refuses it (429)
  /// while the client's address is throttled, and counts a 401 against it.
  template <class F>
  void guarded_login(exchange& x, const char* kind, F attempt);

  caf::actor devices_, sessions_, users_, directory_;
  address_throttle throttle_;
  std::atomic<int64_t> long_polls_{0};
  std::atomic<uint64_t> next_req_{0};
  std::atomic<bool> draining_{false};
  std::mutex metrics_mtx_;
  std::unordered_map<std::string, runtime::counter*> counters_;
  std::unordered_map<std::string, runtime::histogram*> latencies_;
  runtime::gauge* in_flight_ = nullptr;
  runtime::gauge* long_poll_gauge_ = nullptr;
  runtime::counter* retries_ = nullptr;
  runtime::histogram* remote_calls_ = nullptr;
};

// -- plumbing -------------------------------------------------------------------

void edge::observe(const std::string& route, const std::string& method,
                   int status, double seconds) {
  auto key = route + "|" + method + "|" + std::to_string(status);
  runtime::counter* c;
  runtime::histogram* h;
  {
    std::lock_guard<std::mutex> guard{metrics_mtx_};
    auto& cs = counters_[key];
    if (!cs)
      cs = &runtime::metrics().get_counter(
        "troupe_http_requests_total", "HTTP requests by route and status",
        "route=\"" + runtime::label_value(route) + "\",method=\"" + method
          + "\",status=\"" + std::to_string(status) + "\"");
    c = cs;
    auto& hs = latencies_[route];
    if (!hs)
      hs = &runtime::metrics().get_histogram(
        "troupe_http_request_duration_seconds", "HTTP request latency",
        "route=\"" + runtime::label_value(route) + "\"");
    h = hs;
  }
  c->inc();
  h->observe(seconds);
}

void edge::reply(exchange& x, int status, const json& body) {
  x.res.status = status;
  if (status == 204)
    return;
  auto text = body.dump(-1, ' ', false, json::error_handler_t::replace);
  // Our own gzip, so only bodies above the threshold are compressed.
  x.res.set_header("Vary", "Accept-Encoding");
  if (text.size() >= cfg_.gzip_min_bytes && accepts_gzip(x.req)) {
    auto z = gzip(text);
    if (!z.empty()) {
      x.res.set_header("Content-Encoding", "gzip");
      x.res.set_content(std::move(z), "application/json; charset=utf-8");
      return;
    }
  }
  x.res.set_content(std::move(text), "application/json; charset=utf-8");
}

void edge::fail(exchange& x, const api_error& e) {
  if (e.retry_after_s > 0)
    x.res.set_header("Retry-After", std::to_string(e.retry_after_s));
  if (e.status == 401 && x.req.path.rfind("/api/v1/device/", 0) != 0)
    x.res.set_header("WWW-Authenticate", "Bearer");
  if (e.status >= 500)
    log().warn("req={} route={} status={} code={} msg={}", x.req_id, x.route,
               e.status, e.code, e.message);
  x.res.status = e.status;
  x.res.set_header("Vary", "Accept-Encoding");
  x.res.set_content(error_body(e), "application/json; charset=utf-8");
}

void edge::dispatch(const std::string& method, const httplib::Request& req,
                    httplib::Response& res,
                    const httplib::ContentReader* reader) {
  runtime::ensure_signal_stack();
  auto t0 = steady_clock::now();
  exchange x{req, res, {}, {}, {}, "unmatched", method};
  auto rid = req.get_header_value("X-Request-Id");
  x.req_id = valid_id(rid) ? rid
                           : node_.id() + "-" + std::to_string(++next_req_);
  res.set_header("X-Request-Id", x.req_id);
  in_flight_->add(1);
  const route* hit = nullptr;
  std::vector<std::string> allowed;
  for (auto& r : routes_) {
    std::smatch m;
    if (!std::regex_match(req.path, m, r.pattern))
      continue;
    if (r.method == method) {
      hit = &r;
      x.match = std::move(m);
      break;
    }
    allowed.push_back(r.method);
  }
  if (!hit) {
    if (!allowed.empty()) {
      std::string allow;
      for (auto& a : allowed)
        allow += (allow.empty() ? "" : ", ") + a;
      res.set_header("Allow", allow);
      fail(x, api_error{405, "method_not_allowed",
                        method + " is not allowed on " + req.path});
    } else {
      fail(x, api_error{404, "not_found", "no such endpoint: " + req.path});
    }
  } else {
    x.route = hit->name;
    bool ok = true;
    if (auto e = check_content_encoding(
          req.get_header_value("Content-Encoding"))) {
      ok = false;
      res.set_header("Connection", "close");
      fail(x, *e);
    }
    // A POST without Content-Length or chunked encoding has no body.
    if (ok && reader && (req.has_header("Content-Length")
                   || req.has_header("Transfer-Encoding"))) {
      bool too_big = false;
      auto read = (*reader)([&](const char* data, size_t n) {
        // Checked after gzip decoding too, so no body grows past the limit.
        if (x.body.size() + n > cfg_.max_body_bytes) {
          too_big = true;
          return false;
        }
        x.body.append(data, n);
        return true;
      });
      // httplib sets 413 itself when Content-Length is over the limit.
      if (!read && res.status == 413)
        too_big = true;
      if (!read && !too_big) {
        ok = false;
        res.set_header("Connection", "close");
        fail(x, api_error{400, "invalid_request",
                          "the request body could not be read"});
      } else if (too_big) {
        ok = false;
        res.set_header("Connection", "close");
        fail(x, api_error{413, "payload_too_large",
                          "request body exceeds "
                            + std::to_string(cfg_.max_body_bytes)
                            + " bytes"});
      }
    }
    if (ok) {
      try {
        hit->fn(x);
      } catch (const std::exception& e) {
        log().error("req={} route={} unhandled exception: {}", x.req_id,
                    x.route, e.what());
        fail(x, api_error{500, "internal", "internal error"});
      }
    }
  }
  in_flight_->add(-1);
  auto secs = duration<double>(steady_clock::now() - t0).count();
  observe(x.route, method, res.status, secs);
  log().debug("req={} {} {} route={} status={} ms={:.2f}", x.req_id, method,
              req.path, x.route, res.status, secs * 1000);
}

bool edge::page_params(exchange& x, char tag, int64_t& limit,
                       std::string& after) {
  auto lim = parse_limit(x.req.get_param_value("limit"), 100, 1000);
  if (auto e = std::get_if<api_error>(&lim)) {
    fail(x, *e);
    return false;
  }
  limit = std::get<int64_t>(lim);
  if (auto c = x.req.get_param_value("cursor"); !c.empty()) {
    auto pos = decode_cursor(c);
    if (!pos || (*pos)[0] != tag) {
      fail(x, api_error{400, "invalid_cursor", "invalid cursor"});
      return false;
    }
    after = pos->substr(2);
  }
  return true;
}

json edge::page_body(json items, const std::string& next, char tag) {
  return {{"items", std::move(items)},
          {"next_cursor", next.empty() ? json(nullptr)
                                       : json(encode_cursor(
                                         std::string{tag, ':'} + next))}};
}

std::optional<json> edge::json_body(exchange& x) {
  auto mt = media_type(x.req);
  if (!mt.empty() && mt != "application/json") {
    fail(x, api_error{415, "unsupported_media_type",
                      "expected application/json, got " + mt});
    return std::nullopt;
  }
  auto p = parse_json(x.body, cfg_.max_json_depth);
  if (auto e = std::get_if<api_error>(&p)) {
    fail(x, *e);
    return std::nullopt;
  }
  return std::get<json>(std::move(p));
}

std::optional<actors::caller> edge::user(exchange& x) {
  auto token = bearer(x.req);
  if (token.empty())
    token = cookie_value(x.req, "troupe_session");
  if (token.empty() || token.size() > 256) {
    fail(x, api_error{401, "unauthorized", "authentication required"});
    return std::nullopt;
  }
  auto key = storage::crypto::keyed_hash(node_.secret_key(), token);
  auto info = ask_entity<actors::user_info>(sessions_, key,
                                            actors::session_auth{x.req_id});
  if (!info) {
    fail(x, info.error());
    return std::nullopt;
  }
  return actors::caller{info->username, info->role, info->tenant, x.req_id};
}

std::optional<actors::caller> edge::admin(exchange& x) {
  auto who = user(x);
  if (who && who->role != "admin") {
    fail(x, api_error{403, "forbidden", "admin role required"});
    return std::nullopt;
  }
  return who;
}

std::optional<std::string> edge::device_of(exchange& x, std::string& token) {
  token = bearer(x.req);
  auto dot = token.rfind('.');
  if (token.empty() || dot == std::string::npos || dot == 0
      || token.size() > 512 || !valid_id(token.substr(0, dot))) {
    fail(x, api_error{401, "unauthorized", "missing or invalid device token"});
    return std::nullopt;
  }
  return token.substr(0, dot);
}

std::optional<std::string> edge::id_param(exchange& x, size_t i) {
  auto id = x.match[i].str();
  if (!valid_id(id)) {
    fail(x, api_error{404, "not_found", "no such resource: " + id});
    return std::nullopt;
  }
  return id;
}

template <class F>
void edge::guarded_login(exchange& x, const char* kind, F attempt) {
  auto addr = client_address(x.req.remote_addr,
                             x.req.get_header_value("X-Forwarded-For"),
                             cfg_.trusted_proxies);
  auto now = address_throttle::clock::now();
  if (auto wait = throttle_.blocked_for(addr, now); wait.count() > 0) {
    runtime::metrics()
      .get_counter("troupe_login_throttled_total",
                   "Logins refused with 429 (too many failures)",
                   std::string{"kind=\""} + kind + "\",scope=\"address\"")
      .inc();
    log().warn("req={} {} login throttled for address={}", x.req_id, kind,
               addr);
    return fail(x, api_error{429, "too_many_requests",
                             "too many failed logins from this address; "
                             "try again later",
                             static_cast<int>(runtime::retry_after_s(wait))});
  }
  attempt();
  // Counted when answered: a slow password check must not age it.
  if (x.res.status == 401)
    throttle_.fail(addr, address_throttle::clock::now());
}

// -- device side -------------------------------------------------------------------

void edge::device_routes() {
  add("POST", "/api/v1/device/login", "/api/v1/device/login",
      [this](exchange& x) {
        auto body = json_body(x);
        if (!body)
          return;
        auto id = body->find("device_id");
        auto secret = body->find("secret");
        if (!body->is_object() || id == body->end() || !id->is_string()
            || secret == body->end() || !secret->is_string())
          return fail(x, api_error{400, "invalid_request",
                                   "device_id and secret (strings) are "
                                   "required"});
        auto dev = id->get<std::string>();
        guarded_login(x, "device", [&] {
          if (!valid_id(dev))
            return fail(x, api_error{401, "unauthorized",
                                     "invalid device id or secret"});
          auto r = ask_entity<actors::device_login_reply>(
            devices_, dev,
            actors::device_login{secret->get<std::string>(), x.req_id});
          if (!r)
            return fail(x, r.error());
          reply(x, 200,
                {{"token", r->token},
                 {"expires_in", r->expires_in_s},
                 {"commands", commands_json(r->commands)}});
        });
      });
  add("POST", "/api/v1/device/telemetry", "/api/v1/device/telemetry",
      [this](exchange& x) {
        std::string token;
        auto dev = device_of(x, token);
        if (!dev)
          return;
        auto mt = media_type(x.req);
        auto& icfg = node_.cfg().ingest;
        telemetry_limits lim{icfg.max_points_per_request,
                             icfg.max_age_days * 86'400'000,
                             icfg.max_future_s * 1000, cfg_.max_json_depth};
        parsed<actors::telemetry> t = api_error{};
        if (mt.empty() || mt == "application/json") {
          auto body = parse_json(x.body, cfg_.max_json_depth);
          if (auto e = std::get_if<api_error>(&body))
            return fail(x, *e);
          t = parse_telemetry(std::get<json>(body), lim, now_ms());
        } else if (mt == "application/msgpack"
                   || mt == "application/x-msgpack") {
          t = parse_telemetry_msgpack(x.body, lim, now_ms());
        } else {
          return fail(x, api_error{415, "unsupported_media_type",
                                   "expected application/json or "
                                   "application/msgpack, got "
                                     + mt});
        }
        if (auto e = std::get_if<api_error>(&t))
          return fail(x, *e);
        auto& msg = std::get<actors::telemetry>(t);
        msg.token = std::move(token);
        msg.req_id = x.req_id;
        auto r = ask_entity<actors::telemetry_reply>(devices_, *dev,
                                                     std::move(msg));
        if (!r)
          return fail(x, r.error());
        if (r->duplicate)
          return reply(x, 200, {{"accepted", 0}, {"duplicate", true}});
        reply(x, 202,
              {{"accepted", r->accepted},
               {"commands", commands_json(r->commands)}});
      });
  add("GET", "/api/v1/device/commands", "/api/v1/device/commands",
      [this](exchange& x) {
        std::string token;
        auto dev = device_of(x, token);
        if (!dev)
          return;
        int64_t wait = 0;
        if (x.req.has_param("wait")) {
          auto w = parse_int64(x.req.get_param_value("wait"));
          if (!w || *w < 0 || *w > 60)
            return fail(x, api_error{400, "invalid_request",
                                     "wait must be an integer from 0 to 60"});
          wait = *w;
        }
        if (draining_)
          wait = 0;
        struct slot {
          std::atomic<int64_t>& n;
          runtime::gauge* g;
          ~slot() {
            --n;
            g->add(-1);
          }
        };
        std::optional<slot> held;
        if (wait > 0) {
          if (++long_polls_ > static_cast<int64_t>(cfg_.max_long_polls)) {
            --long_polls_;
            return fail(x, api_error{429, "too_many_requests",
                                     "too many devices are waiting; poll "
                                     "again later",
                                     5});
          }
          long_poll_gauge_->add(1);
          held.emplace(slot{long_polls_, long_poll_gauge_});
        }
        auto r = ask_entity<actors::commands_reply>(
          devices_, *dev, actors::poll_commands{token, wait * 1000, x.req_id},
          milliseconds(cfg_.request_timeout_ms + wait * 1000));
        if (!r)
          return fail(x, r.error());
        reply(x, 200, {{"commands", commands_json(r->commands)}});
      });
  add("POST", "/api/v1/device/commands/([^/]+)/result",
      "/api/v1/device/commands/{id}/result", [this](exchange& x) {
        std::string token;
        auto dev = device_of(x, token);
        if (!dev)
          return;
        auto body = json_body(x);
        if (!body)
          return;
        auto st = body->is_object() ? body->find("status") : body->end();
        if (st == body->end() || !st->is_string()
            || (*st != "done" && *st != "failed"))
          return fail(x, api_error{400, "invalid_request",
                                   "status must be \"done\" or \"failed\""});
        std::string result = "null";
        if (auto r = body->find("result"); r != body->end())
          result = r->dump();
        auto cid = x.match[1].str();
        if (cid.size() > 128)
          return fail(x, api_error{404, "not_found", "no such command"});
        auto r = ask_entity<actors::done>(
          devices_, *dev,
          actors::command_result{token, cid, st->get<std::string>(), result,
                                 x.req_id});
        if (!r)
          return fail(x, r.error());
        reply(x, 200, {{"id", cid}, {"status", st->get<std::string>()}});
      });
}

// -- user side ---------------------------------------------------------------------

void edge::user_routes() {
  add("POST", "/api/v1/login", "/api/v1/login", [this](exchange& x) {
    auto body = json_body(x);
    if (!body)
      return;
    auto u = body->is_object() ? body->find("username") : body->end();
    auto p = body->is_object() ? body->find("password") : body->end();
    if (u == body->end() || !u->is_string() || p == body->end()
        || !p->is_string())
      return fail(x, api_error{400, "invalid_request",
                               "username and password (strings) are "
                               "required"});
    auto name = u->get<std::string>();
    auto pw = p->get<std::string>();
    guarded_login(x, "user", [&] {
      if (!valid_id(name) || pw.size() > 1024)
        return fail(x, api_error{401, "unauthorized",
                                 "invalid username or password"});
      auto r = ask_entity<actors::user_login_reply>(
        users_, name, actors::user_login{name, pw, x.req_id});
      if (!r)
        return fail(x, r.error());
      x.res.set_header("Set-Cookie",
                       "troupe_session=" + r->token
                         + "; HttpOnly; SameSite=Strict; Path=/");
      reply(x, 200, {{"token", r->token}, {"user", user_json(r->user)}});
    });
  });
  add("POST", "/api/v1/logout", "/api/v1/logout", [this](exchange& x) {
    auto token = bearer(x.req);
    if (token.empty())
      token = cookie_value(x.req, "troupe_session");
    if (token.empty())
      return fail(x, api_error{401, "unauthorized",
                               "authentication required"});
    auto key = storage::crypto::keyed_hash(node_.secret_key(), token);
    auto r = ask<actors::done>(
      sessions_, caf::make_message(runtime::route_atom::value, key,
                                   caf::make_message(actors::logout_atom::value)));
    if (!r)
      return fail(x, r.error());
    x.res.set_header("Set-Cookie", "troupe_session=; HttpOnly; "
                                   "SameSite=Strict; Path=/; Max-Age=0");
    reply(x, 204, {});
  });
  add("GET", "/api/v1/me", "/api/v1/me", [this](exchange& x) {
    auto who = user(x);
    if (!who)
      return;
    reply(x, 200, user_json(actors::user_info{who->username, who->role,
                                              who->tenant}));
  });
  add("GET", "/api/v1/devices", "/api/v1/devices", [this](exchange& x) {
    auto who = user(x);
    if (!who)
      return;
    actors::list_devices req;
    req.who = *who;
    req.q = x.req.get_param_value("q");
    if (req.q.size() > 128 || !printable(req.q))
      return fail(x, api_error{400, "invalid_request",
                               "q must be at most 128 printable "
                               "characters"});
    if (x.req.has_param("online")) {
      auto v = x.req.get_param_value("online");
      if (v != "true" && v != "false")
        return fail(x, api_error{400, "invalid_request",
                                 "online must be true or false"});
      req.online = v == "true" ? 1 : 0;
    }
    if (!page_params(x, 'd', req.limit, req.after))
      return;
    auto r = ask<actors::device_page>(directory_, caf::make_message(req));
    if (!r)
      return fail(x, r.error());
    auto items = json::array();
    for (auto& v : r->items)
      items.push_back(device_json(v, false));
    reply(x, 200, page_body(std::move(items), r->next, 'd'));
  });
  add("GET", "/api/v1/devices/([^/]+)", "/api/v1/devices/{id}",
      [this](exchange& x) {
        auto who = user(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto r = ask_entity<actors::device_view>(devices_, *id,
                                                 actors::get_device{*who});
        if (!r)
          return fail(x, r.error());
        reply(x, 200, device_json(*r, true));
      });
  add("GET", "/api/v1/devices/([^/]+)/telemetry",
      "/api/v1/devices/{id}/telemetry", [this](exchange& x) {
        auto who = user(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        actors::history h;
        h.who = *who;
        h.metric = x.req.get_param_value("metric");
        if (!valid_id(h.metric))
          return fail(x, api_error{400, "invalid_request",
                                   "metric is required and must be a valid "
                                   "metric name"});
        auto ts_param = [&](const char* name, int64_t def)
          -> std::optional<int64_t> {
          if (!x.req.has_param(name))
            return def;
          auto v = x.req.get_param_value(name);
          if (auto n = parse_int64(v))
            return n;
          return parse_rfc3339(v);
        };
        auto now = now_ms();
        auto to = ts_param("to", now + 86'400'000);
        auto from = ts_param("from", 0);
        if (!from || !to)
          return fail(x, api_error{400, "invalid_request",
                                   "from and to must be ms timestamps or "
                                   "RFC 3339"});
        if (*from > *to)
          return fail(x, api_error{400, "invalid_request",
                                   "from must not be after to"});
        h.from_ms = *from;
        h.to_ms = *to;
        auto lim = parse_limit(x.req.get_param_value("limit"), 1000, 100000);
        if (auto e = std::get_if<api_error>(&lim))
          return fail(x, *e);
        h.limit = std::get<int64_t>(lim);
        if (x.req.has_param("step")) {
          auto step = parse_step(x.req.get_param_value("step"));
          if (!step)
            return fail(x, api_error{400, "invalid_request",
                                     "step must look like 60s, 5m, 1h or 1d"});
          h.step_ms = *step;
        }
        auto r = ask_entity<actors::history_reply>(devices_, *id, h);
        if (!r)
          return fail(x, r.error());
        auto pts = json::array();
        if (r->bucketed) {
          for (auto& b : r->buckets)
            pts.push_back({static_cast<int64_t>(b[0]),
                           static_cast<int64_t>(b[1]), b[2], b[3], b[4]});
          // Buckets replace the raw points, under the same key.
          reply(x, 200, {{"metric", r->metric},
                         {"step_ms", h.step_ms},
                         {"points", pts}});
        } else {
          for (auto& [ts, v] : r->points)
            pts.push_back({ts, v});
          reply(x, 200, {{"metric", r->metric}, {"points", pts}});
        }
      });
  add("POST", "/api/v1/devices/([^/]+)/commands",
      "/api/v1/devices/{id}/commands", [this](exchange& x) {
        auto who = user(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto body = json_body(x);
        if (!body)
          return;
        if (!body->is_object())
          return fail(x, api_error{400, "invalid_request",
                                   "body must be a JSON object"});
        actors::post_command pc;
        pc.who = *who;
        auto name = body->find("name");
        if (name == body->end() || !name->is_string()
            || !valid_id(name->get<std::string>()))
          return fail(x, api_error{400, "invalid_request",
                                   "name is required ([A-Za-z0-9_.:-]{1,64})"});
        pc.name = name->get<std::string>();
        if (auto a = body->find("args"); a != body->end() && !a->is_null()) {
          if (!a->is_object())
            return fail(x, api_error{400, "invalid_request",
                                     "args must be an object"});
          pc.args_json = a->dump();
        }
        if (auto t = body->find("ttl_s"); t != body->end() && !t->is_null()) {
          if (!t->is_number_integer() || t->get<int64_t>() < 1
              || t->get<int64_t>() > 30LL * 86400)
            return fail(x, api_error{400, "invalid_request",
                                     "ttl_s must be an integer from 1 to "
                                     "2592000"});
          pc.ttl_s = t->get<int64_t>();
        }
        auto r = ask_entity<actors::command>(devices_, *id, pc);
        if (!r)
          return fail(x, r.error());
        reply(x, 201, user_command_json(*r));
      });
  add("GET", "/api/v1/devices/([^/]+)/commands",
      "/api/v1/devices/{id}/commands", [this](exchange& x) {
        auto who = user(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        actors::list_commands lc;
        lc.who = *who;
        lc.status = x.req.get_param_value("status");
        static const std::vector<std::string> states
          = {"", "pending", "delivered", "done", "failed", "expired"};
        if (std::find(states.begin(), states.end(), lc.status) == states.end())
          return fail(x, api_error{400, "invalid_request",
                                   "status must be pending, delivered, done, "
                                   "failed or expired"});
        auto lim = parse_limit(x.req.get_param_value("limit"), 100, 1000);
        if (auto e = std::get_if<api_error>(&lim))
          return fail(x, *e);
        lc.limit = std::get<int64_t>(lim);
        if (auto c = x.req.get_param_value("cursor"); !c.empty()) {
          auto pos = decode_cursor(c);
          auto seq = pos ? parse_int64(pos->substr(2)) : std::nullopt;
          if (!pos || (*pos)[0] != 'c' || !seq)
            return fail(x, api_error{400, "invalid_cursor", "invalid cursor"});
          lc.after_seq = *seq;
        }
        auto r = ask_entity<actors::command_page>(devices_, *id, lc);
        if (!r)
          return fail(x, r.error());
        auto items = json::array();
        for (auto& c : r->items)
          items.push_back(user_command_json(c));
        reply(x, 200,
              {{"items", items},
               {"next_cursor",
                r->next_seq < 0
                  ? json(nullptr)
                  : json(encode_cursor("c:" + std::to_string(r->next_seq)))}});
      });
}

// -- admin side --------------------------------------------------------------------

void edge::admin_routes() {
  add("POST", "/api/v1/admin/tenants", "/api/v1/admin/tenants",
      [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto body = json_body(x);
        if (!body)
          return;
        auto id = body->is_object() ? body->find("id") : body->end();
        if (id == body->end() || !id->is_string()
            || !valid_id(id->get<std::string>()))
          return fail(x, api_error{400, "invalid_request",
                                   "id is required ([A-Za-z0-9_.:-]{1,64})"});
        actors::tenant_info t{id->get<std::string>(), id->get<std::string>(),
                              0};
        if (auto n = body->find("name"); n != body->end()) {
          if (!n->is_string() || n->get<std::string>().size() > 256)
            return fail(x, api_error{400, "invalid_request",
                                     "name must be a string (at most 256)"});
          t.name = n->get<std::string>();
        }
        auto r = ask<actors::tenant_info>(
          directory_, caf::make_message(actors::create_tenant{*who, t}));
        if (!r)
          return fail(x, r.error());
        reply(x, 201, tenant_json(*r));
      });
  add("GET", "/api/v1/admin/tenants", "/api/v1/admin/tenants",
      [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto r = ask<actors::tenant_list>(
          directory_, caf::make_message(actors::list_tenants{*who}));
        if (!r)
          return fail(x, r.error());
        auto items = json::array();
        for (auto& t : r->items)
          items.push_back(tenant_json(t));
        reply(x, 200, {{"items", items}, {"next_cursor", nullptr}});
      });
  add("POST", "/api/v1/admin/users", "/api/v1/admin/users",
      [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto body = json_body(x);
        if (!body)
          return;
        if (!body->is_object())
          return fail(x, api_error{400, "invalid_request",
                                   "body must be a JSON object"});
        auto str = [&](const char* k) -> std::optional<std::string> {
          auto it = body->find(k);
          if (it == body->end() || it->is_null())
            return std::string{};
          if (!it->is_string())
            return std::nullopt;
          return it->get<std::string>();
        };
        auto u = str("username"), p = str("password"), r = str("role"),
             t = str("tenant");
        if (!u || !p || !r || !t)
          return fail(x, api_error{400, "invalid_request",
                                   "username, password, role and tenant must "
                                   "be strings"});
        if (!valid_id(*u))
          return fail(x, api_error{400, "invalid_request",
                                   "username must match [A-Za-z0-9_.:-]{1,64}"});
        if (p->size() < 8 || p->size() > 1024)
          return fail(x, api_error{400, "invalid_request",
                                   "password must be 8 to 1024 characters"});
        if (*r != "admin" && *r != "operator" && *r != "viewer")
          return fail(x, api_error{400, "invalid_request",
                                   "role must be admin, operator or viewer"});
        if (*r != "admin" && t->empty())
          return fail(x, api_error{400, "invalid_request",
                                   "tenant is required for role " + *r});
        if (!t->empty() && !valid_id(*t))
          return fail(x, api_error{400, "invalid_request",
                                   "tenant is not a valid id"});
        auto res = ask<actors::user_record>(
          directory_,
          caf::make_message(actors::create_user{*who, *u, *p, *r, *t}));
        if (!res)
          return fail(x, res.error());
        reply(x, 201, user_json(*res));
      });
  add("GET", "/api/v1/admin/users", "/api/v1/admin/users",
      [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        actors::list_users lu{*who, "", 100};
        if (!page_params(x, 'u', lu.limit, lu.after))
          return;
        auto r = ask<actors::user_list>(directory_, caf::make_message(lu));
        if (!r)
          return fail(x, r.error());
        auto items = json::array();
        for (auto& u : r->items)
          items.push_back(user_json(u));
        reply(x, 200, page_body(std::move(items), r->next, 'u'));
      });
  add("DELETE", "/api/v1/admin/users/([^/]+)", "/api/v1/admin/users/{username}",
      [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto name = id_param(x);
        if (!name)
          return;
        auto r = ask<actors::done>(
          directory_, caf::make_message(actors::delete_user{*who, *name}));
        if (!r)
          return fail(x, r.error());
        reply(x, 204, {});
      });
  add("POST", "/api/v1/admin/devices", "/api/v1/admin/devices",
      [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto body = json_body(x);
        if (!body)
          return;
        bool bulk = body->is_array();
        if (!bulk && !body->is_object())
          return fail(x, api_error{400, "invalid_request",
                                   "body must be a device object or an array "
                                   "of them"});
        auto list = bulk ? *body : json::array({*body});
        if (list.empty() || list.size() > 10000)
          return fail(x, api_error{400, "invalid_request",
                                   "register 1 to 10000 devices at once"});
        actors::register_devices req{*who, {}};
        std::vector<std::string> seen;
        for (size_t i = 0; i < list.size(); ++i) {
          auto& d = list[i];
          auto where = bulk ? "[" + std::to_string(i) + "]." : std::string{};
          if (!d.is_object())
            return fail(x, api_error{400, "invalid_request",
                                     where + " is not an object"});
          auto id = d.find("id");
          auto tenant = d.find("tenant");
          auto name = d.find("name");
          if (id == d.end() || !id->is_string()
              || !valid_id(id->get<std::string>()))
            return fail(x, api_error{400, "invalid_request",
                                     where + "id is required "
                                             "([A-Za-z0-9_.:-]{1,64})"});
          if (tenant == d.end() || !tenant->is_string()
              || !valid_id(tenant->get<std::string>()))
            return fail(x, api_error{400, "invalid_request",
                                     where + "tenant is required"});
          std::string nm = id->get<std::string>();
          if (name != d.end() && !name->is_null()) {
            if (!name->is_string() || name->get<std::string>().size() > 256)
              return fail(x, api_error{400, "invalid_request",
                                       where + "name must be a string"});
            nm = name->get<std::string>();
          }
          req.devices.push_back(
            {id->get<std::string>(), nm, tenant->get<std::string>()});
          seen.push_back(id->get<std::string>());
        }
        std::sort(seen.begin(), seen.end());
        if (std::adjacent_find(seen.begin(), seen.end()) != seen.end())
          return fail(x, api_error{400, "invalid_request",
                                   "the same device id appears twice"});
        auto r = ask<actors::device_secrets>(directory_,
                                             caf::make_message(req),
                                             milliseconds(120'000));
        if (!r)
          return fail(x, r.error());
        auto out = json::array();
        for (auto& s : r->items)
          out.push_back({{"id", s.id},
                         {"name", s.name},
                         {"tenant", s.tenant},
                         {"secret", s.secret}});
        reply(x, 201, bulk ? out : out[0]);
      });
  add("POST", "/api/v1/admin/devices/([^/]+)/rotate-secret",
      "/api/v1/admin/devices/{id}/rotate-secret", [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto r = ask<actors::device_secret>(
          directory_, caf::make_message(actors::rotate_secret{*who, *id}));
        if (!r)
          return fail(x, r.error());
        reply(x, 200, {{"id", r->id}, {"secret", r->secret}});
      });
  add("DELETE", "/api/v1/admin/devices/([^/]+)", "/api/v1/admin/devices/{id}",
      [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto r = ask<actors::done>(
          directory_, caf::make_message(actors::delete_device{*who, *id}));
        if (!r)
          return fail(x, r.error());
        reply(x, 204, {});
      });
}

// -- operations ---------------------------------------------------------------------

void edge::ops_routes() {
  add("GET", "/healthz", "/healthz",
      [this](exchange& x) { reply(x, 200, {{"status", "ok"}}); });
  add("GET", "/readyz", "/readyz", [this](exchange& x) {
    std::string why;
    if (node_.ready(&why))
      return reply(x, 200, {{"status", "ready"}, {"node", node_.id()}});
    x.res.set_header("Retry-After", "1");
    reply(x, 503, {{"status", "not_ready"}, {"reason", why}});
  });
  add("GET", "/metrics", "/metrics", [](exchange& x) {
    x.res.status = 200;
    x.res.set_content(runtime::metrics().render(),
                      "text/plain; version=0.0.4; charset=utf-8");
  });
  add("GET", "/api/v1/cluster", "/api/v1/cluster", [this](exchange& x) {
    auto who = admin(x);
    if (!who)
      return;
    auto& c = node_.cfg().cluster;
    if (!node_.clustered()) {
      auto count = ask<int64_t>(devices_,
                                caf::make_message(runtime::count_atom::value));
      auto sessions = ask<int64_t>(
        sessions_, caf::make_message(runtime::count_atom::value));
      json member = {{"id", node_.id()},
                     {"address", node_.cfg().http.listen},
                     {"http", node_.cfg().http.listen},
                     {"state", node_.stopping() ? "leaving" : "alive"},
                     {"shards", c.shards},
                     {"actors",
                      (count ? *count : 0) + (sessions ? *sessions : 0)},
                     {"since_ms", node_.started_ms()}};
      return reply(x, 200,
                   {{"members", json::array({member})},
                    {"shard_map_version", 1},
                    {"shards", c.shards},
                    {"coordinator", node_.id()},
                    {"moving", json::array()}});
    }
    auto v = node_.view();
    auto members = json::array();
    for (auto& m : v.members)
      members.push_back({{"id", m.id},
                         {"address", m.cluster_address},
                         {"http", m.http_address},
                         {"state", m.state},
                         {"shards", m.shards},
                         {"actors", m.actors},
                         {"since_ms", m.since_ms},
                         {"heartbeat_ms", m.heartbeat_ms},
                         {"applied_version", m.applied_version}});
    auto moving = json::array();
    if (v.shards_in_motion > 0)
      moving.push_back({{"version", v.map_version},
                        {"waiting_for", "members to apply the map"}});
    reply(x, 200,
          {{"members", members},
           {"shard_map_version", v.map_version},
           {"shards", c.shards},
           {"coordinator", v.coordinator},
           {"node", node_.id()},
           {"fenced", v.fenced},
           {"moving", moving}});
  });
  add("POST", "/api/v1/cluster/nodes/([^/]+)/drain",
      "/api/v1/cluster/nodes/{id}/drain", [this](exchange& x) {
        auto who = admin(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto membership = node_.actor("membership");
        if (!node_.clustered() || !membership) {
          if (*id != node_.id())
            return fail(x, api_error{404, "not_found",
                                     "no such member: " + *id});
          return fail(x, api_error{409, "conflict",
                                   "a single node has no one to hand its "
                                   "shards to; stop it with SIGTERM"});
        }
        auto r = ask<std::string>(
          membership, caf::make_message(runtime::drain_atom::value, *id));
        if (!r) {
          if (r.error() == runtime::errc::moved)
            return fail(x, api_error{404, "not_found",
                                     "no such member: " + *id});
          return fail(x, r.error());
        }
        reply(x, 202, {{"id", *id}, {"state", *r}});
      });
}

// -- analysis, alerts and rules ---------------------------------------------------

void edge::analysis_routes() {
  add("GET", "/api/v1/devices/([^/]+)/analysis",
      "/api/v1/devices/{id}/analysis", [this](exchange& x) {
        auto who = user(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto ts_param = [&](const char* name, int64_t def)
          -> std::optional<int64_t> {
          if (!x.req.has_param(name))
            return def;
          auto v = x.req.get_param_value(name);
          if (auto n = parse_int64(v))
            return n;
          return parse_rfc3339(v);
        };
        auto now = now_ms();
        auto to = ts_param("to", now);
        auto from = ts_param("from", now - 86'400'000);
        if (!from || !to)
          return fail(x, api_error{400, "invalid_request",
                                   "from and to must be ms timestamps or "
                                   "RFC 3339"});
        if (*from > *to)
          return fail(x, api_error{400, "invalid_request",
                                   "from must not be after to"});
        auto r = ask_entity<actors::analysis_reply>(
          devices_, *id, actors::get_analysis{*who, *from, *to});
        if (!r)
          return fail(x, r.error());
        reply(x, 200, analysis_json(*r));
      });
  add("GET", "/api/v1/alerts", "/api/v1/alerts", [this](exchange& x) {
    auto who = user(x);
    if (!who)
      return;
    actors::list_alerts req;
    req.who = *who;
    if (x.req.has_param("state")) {
      req.state = x.req.get_param_value("state");
      if (req.state != "open" && req.state != "closed")
        return fail(x, api_error{400, "invalid_request",
                                 "state must be open or closed"});
    }
    if (!page_params(x, 'a', req.limit, req.after))
      return;
    auto r = ask<actors::alert_page>(directory_, caf::make_message(req));
    if (!r)
      return fail(x, r.error());
    auto items = json::array();
    for (auto& a : r->items)
      items.push_back(alert_json(a));
    reply(x, 200, page_body(std::move(items), r->next, 'a'));
  });
  // Closing an alert that is already closed answers 409.
  add("POST", "/api/v1/alerts/([^/]+)/close", "/api/v1/alerts/{id}/close",
      [this](exchange& x) {
        auto who = user(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto r = ask<actors::alert>(
          directory_, caf::make_message(actors::close_alert{*who, *id}));
        if (!r)
          return fail(x, r.error());
        reply(x, 200, alert_json(*r));
      });
  add("GET", "/api/v1/rules", "/api/v1/rules", [this](exchange& x) {
    auto who = user(x);
    if (!who)
      return;
    actors::list_rules req;
    req.who = *who;
    if (!page_params(x, 'r', req.limit, req.after))
      return;
    auto r = ask<actors::rule_page>(directory_, caf::make_message(req));
    if (!r)
      return fail(x, r.error());
    auto items = json::array();
    for (auto& rl : r->items)
      items.push_back(rule_json(rl));
    reply(x, 200, page_body(std::move(items), r->next, 'r'));
  });
  add("POST", "/api/v1/rules", "/api/v1/rules", [this](exchange& x) {
    auto who = user(x);
    if (!who)
      return;
    auto body = json_body(x);
    if (!body)
      return;
    if (!body->is_object())
      return fail(x, api_error{400, "invalid_request",
                               "body must be a JSON object"});
    auto bad = [&](const std::string& what) {
      fail(x, api_error{400, "invalid_request", what});
    };
    actors::rule spec;
    auto metric = body->find("metric");
    if (metric == body->end() || !metric->is_string()
        || !valid_id(metric->get<std::string>()))
      return bad("metric is required ([A-Za-z0-9_.:-]{1,64})");
    spec.metric = metric->get<std::string>();
    auto op = body->find("op");
    if (op == body->end() || !op->is_string()
        || !actors::valid_op(op->get<std::string>()))
      return bad("op must be one of >, >=, <, <=, ==, !=");
    spec.op = op->get<std::string>();
    auto value = body->find("value");
    if (value == body->end() || !value->is_number()
        || !std::isfinite(value->get<double>()))
      return bad("value is required and must be a finite number");
    spec.value = value->get<double>();
    if (auto f = body->find("for_s"); f != body->end() && !f->is_null()) {
      if (!f->is_number_integer() || f->get<int64_t>() < 0
          || f->get<int64_t>() > 86400)
        return bad("for_s must be an integer from 0 to 86400");
      spec.for_s = f->get<int64_t>();
    }
    if (auto d = body->find("device_id"); d != body->end() && !d->is_null()) {
      if (!d->is_string() || !valid_id(d->get<std::string>()))
        return bad("device_id must be a device id ([A-Za-z0-9_.:-]{1,64})");
      spec.device_id = d->get<std::string>();
    }
    if (auto t = body->find("tenant"); t != body->end() && !t->is_null()) {
      if (!t->is_string() || !valid_id(t->get<std::string>()))
        return bad("tenant must be a tenant id");
      spec.tenant = t->get<std::string>();
    }
    auto r = ask<actors::rule>(directory_,
                               caf::make_message(actors::create_rule{*who,
                                                                     spec}));
    if (!r)
      return fail(x, r.error());
    reply(x, 201, rule_json(*r));
  });
  add("DELETE", "/api/v1/rules/([^/]+)", "/api/v1/rules/{id}",
      [this](exchange& x) {
        auto who = user(x);
        if (!who)
          return;
        auto id = id_param(x);
        if (!id)
          return;
        auto r = ask<actors::done>(
          directory_, caf::make_message(actors::delete_rule{*who, *id}));
        if (!r)
          return fail(x, r.error());
        reply(x, 204, {});
      });
}

void edge::routes() {
  device_routes();
  user_routes();
  admin_routes();
  ops_routes();
  analysis_routes();
}

// -- lifecycle ----------------------------------------------------------------------

caf::error edge::start() {
  devices_ = node_.actor("devices");
  users_ = node_.actor("users");
  sessions_ = node_.actor("sessions");
  directory_ = node_.actor("directory");
  auto& reg = runtime::metrics();
  in_flight_ = &reg.get_gauge("troupe_http_in_flight", "Requests being served");
  long_poll_gauge_ = &reg.get_gauge("troupe_http_long_polls",
                                    "Long-polls being held");
  remote_calls_ = &reg.get_histogram("troupe_cluster_remote_call_seconds",
                                     "Latency of requests served by another "
                                     "node (forwarded over CAF)");
  retries_ = &reg.get_counter("troupe_http_moved_retries_total",
                              "Requests retried because their shard was "
                              "moving");
  routes();
  auto threads = cfg_.threads;
  svr_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr_.set_tcp_nodelay(true);
  svr_.set_keep_alive_max_count(cfg_.keep_alive_max_count);
  svr_.set_keep_alive_timeout(cfg_.keep_alive_s);
  svr_.set_read_timeout(30, 0);
  svr_.set_write_timeout(30, 0);
  svr_.set_payload_max_length(cfg_.max_body_bytes);
  for (auto m : {"GET", "DELETE"}) {
    auto handler = [this, method = std::string{m}](const httplib::Request& req,
                                                   httplib::Response& res) {
      dispatch(method, req, res, nullptr);
    };
    if (std::string{m} == "GET")
      svr_.Get(".*", handler);
    else
      svr_.Delete(".*", handler);
  }
  auto with_body = [this](std::string method) {
    return [this, method](const httplib::Request& req, httplib::Response& res,
                          const httplib::ContentReader& reader) {
      dispatch(method, req, res, &reader);
    };
  };
  svr_.Post(".*", with_body("POST"));
  svr_.Put(".*", with_body("PUT"));
  svr_.Patch(".*", with_body("PATCH"));
  svr_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty())
      return;
    api_error e{res.status, "error", "request failed"};
    switch (res.status) {
      case 400:
        e = {400, "invalid_request", "malformed request"};
        break;
      case 404:
        e = {404, "not_found", "no such endpoint"};
        break;
      case 405:
        e = {405, "method_not_allowed", "method not allowed"};
        break;
      case 413:
        e = {413, "payload_too_large", "request body too large"};
        break;
      case 414:
        e = {414, "uri_too_long", "request URI too long"};
        break;
      case 415:
        e = {415, "unsupported_media_type", "unsupported content encoding"};
        break;
      default:
        break;
    }
    res.set_content(error_body(e), "application/json; charset=utf-8");
  });
  svr_.set_exception_handler(
    [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      res.status = 500;
      res.set_content(error_body({500, "internal", "internal error"}),
                      "application/json; charset=utf-8");
    });
  std::string host;
  uint16_t port = 0;
  config::split_host_port(cfg_.listen, host, port);
  if (!svr_.bind_to_port(host, port))
    return actors::make_actor_error(actors::errc::unavailable,
                                    "cannot listen on " + cfg_.listen);
  thread_ = std::thread([this] { svr_.listen_after_bind(); });
  log().info("http edge listening on {} threads={}", cfg_.listen, threads);
  return caf::none;
}

void edge::stop() {
  // Waiting long-polls answer now; new ones do not wait.
  draining_ = true;
  caf::anon_send(devices_, runtime::broadcast_atom::value,
                 caf::make_message(runtime::drain_atom::value));
  log().info("http edge stopping: refusing new requests, finishing "
             "in-flight ones");
  svr_.stop();
  if (thread_.joinable())
    thread_.join();
  log().info("http edge stopped");
}

} // namespace

void install(runtime::node& n) {
  auto e = std::make_shared<edge>(n);
  n.add_service(
    "http", [e](runtime::node&) { return e->start(); },
    [e](runtime::node&) { e->stop(); });
}

} // namespace troupe::http
