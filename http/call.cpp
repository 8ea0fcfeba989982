#include "http/call.hpp"

#include <caf/all.hpp>

#include "http/client_address.hpp"
#include "http/csrf.hpp"
#include "http/logger.hpp"
#include "http/parse.hpp"
#include "http/probe.hpp"
#include "runtime/node.hpp"
#include "storage/crypto.hpp"

namespace troupe::http {

namespace {

std::string media_type(const request& req) {
  auto ct = req.header("Content-Type");
  auto semi = ct.find(';');
  if (semi != std::string::npos)
    ct = ct.substr(0, semi);
  while (!ct.empty() && ct.back() == ' ')
    ct.pop_back();
  for (auto& c : ct)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ct;
}

std::string cookie_value(const request& req, const std::string& name) {
  auto header = req.header("Cookie");
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

std::string bearer(const request& req) {
  auto h = req.header("Authorization");
  if (h.size() > 7 && (h.rfind("Bearer ", 0) == 0 || h.rfind("bearer ", 0) == 0))
    return h.substr(7);
  return {};
}

} // namespace

call::call(edge_env& env, exchange_ptr x, std::string route,
           std::vector<std::string> params, std::string req_id)
  : env_(env),
    x_(std::move(x)),
    route_(std::move(route)),
    params_(std::move(params)),
    req_id_(std::move(req_id)) {
  env_.probe->in_flight.add(1);
}

call::~call() {
  if (status_.load() == 0)
    fail(api_error{503, "unavailable", "the request was dropped; retry", 1});
}

std::optional<std::string> call::id_param(size_t i) {
  auto& id = params_.at(i);
  if (!valid_id(id)) {
    fail(api_error{404, "not_found",
                   "no such resource: "
                     + (printable(id) ? id.substr(0, 80) : std::string{"?"})});
    return std::nullopt;
  }
  return id;
}

std::string call::client_address() const {
  return http::client_address(req().remote_address,
                              req().header("X-Forwarded-For"),
                              env_.cfg.trusted_proxies);
}

void call::add_header(std::string name, std::string value) {
  headers_.push_back({std::move(name), std::move(value)});
}

void call::reply(unsigned status, const json& body) {
  unsigned none = 0;
  if (!status_.compare_exchange_strong(none, status))
    return;
  response r;
  r.status = status;
  r.headers = std::move(headers_);
  r.headers.push_back({"X-Request-Id", req_id_});
  if (status != 204)
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  else
    r.content_type.clear();
  x_->reply(std::move(r));
  finish(status);
}

void call::reply_text(unsigned status, std::string content_type,
                      std::string body) {
  unsigned none = 0;
  if (!status_.compare_exchange_strong(none, status))
    return;
  response r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.headers = std::move(headers_);
  r.headers.push_back({"X-Request-Id", req_id_});
  r.body = std::move(body);
  x_->reply(std::move(r));
  finish(status);
}

void call::fail(const api_error& e) {
  unsigned none = 0;
  if (!status_.compare_exchange_strong(none, static_cast<unsigned>(e.status)))
    return;
  response r;
  r.status = static_cast<unsigned>(e.status);
  r.headers = std::move(headers_);
  r.headers.push_back({"X-Request-Id", req_id_});
  if (e.retry_after_s > 0)
    r.headers.push_back({"Retry-After", std::to_string(e.retry_after_s)});
  if (e.status == 401 && req().path.rfind("/api/v1/device/", 0) != 0)
    r.headers.push_back({"WWW-Authenticate", "Bearer"});
  if (e.status >= 500)
    log().warn("req={} route={} status={} code={} msg={}", req_id_, route_,
               e.status, e.code, e.message);
  r.body = error_body(e);
  x_->reply(std::move(r));
  finish(static_cast<unsigned>(e.status));
}

void call::finish(unsigned status) {
  env_.probe->in_flight.add(-1);
  auto secs = std::chrono::duration<double>(clock::now() - started_).count();
  env_.probe->request_done(route_, req().method, status, secs);
  log().debug("req={} {} {} route={} status={} ms={:.2f}", req_id_,
              req().method, req().path, route_, status, secs * 1000);
}

std::optional<nlohmann::json> call::json_body() {
  auto mt = media_type();
  if (!mt.empty() && mt != "application/json") {
    fail(api_error{415, "unsupported_media_type",
                   "expected application/json, got "
                     + (printable(mt) ? mt : std::string{"?"})});
    return std::nullopt;
  }
  auto p = parse_json(req().body, env_.cfg.max_json_depth);
  if (auto e = std::get_if<api_error>(&p)) {
    fail(*e);
    return std::nullopt;
  }
  return std::get<json>(std::move(p));
}

std::string call::media_type() const {
  return http::media_type(req());
}

std::optional<std::string> call::session_token() {
  auto token = bearer(req());
  if (token.empty()) {
    token = cookie_value(req(), "troupe_session");
    if (!token.empty() && unsafe_method(req().method)) {
      if (auto why = forged_origin(req())) {
        log().warn("req={} {} {} refused: {}", req_id_, req().method,
                   req().path, *why);
        fail(api_error{403, "forbidden", *why});
        return std::nullopt;
      }
    }
  }
  if (token.empty() || token.size() > 256) {
    fail(api_error{401, "unauthorized", "authentication required"});
    return std::nullopt;
  }
  return token;
}

void call::user(std::function<void(const actors::caller&)> k) {
  auto token = session_token();
  if (!token)
    return;
  auto key = storage::crypto::keyed_hash(env_.secret_key, *token);
  auto self = shared_from_this();
  ask_entity(
    env_.sessions, key, actors::session_auth{req_id_},
    [self, k](actors::user_info& u) {
      k(actors::caller{u.username, u.role, u.tenant, self->req_id_});
    });
}

std::optional<std::string> call::device(std::string& token) {
  token = bearer(req());
  auto dot = token.rfind('.');
  if (token.empty() || dot == std::string::npos || dot == 0
      || token.size() > 512 || !valid_id(token.substr(0, dot))) {
    fail(api_error{401, "unauthorized", "missing or invalid device token"});
    return std::nullopt;
  }
  return token.substr(0, dot);
}

void call::observe_remote(const caf::message& envelope, clock::time_point t0) {
  auto map = env_.node.current_map();
  if (!map || map->shards() == 0 || envelope.size() < 2
      || !envelope.match_element<std::string>(1))
    return;
  auto& key = envelope.get_as<std::string>(1);
  if (map->owner(map->shard_of(key)) != env_.node.id())
    env_.probe->remote_calls.observe(
      std::chrono::duration<double>(clock::now() - t0).count());
}

bool call::stale_entity(const caf::error& err) {
  return err == runtime::errc::moved
         || err == caf::sec::request_receiver_down;
}

void call::count_retry() {
  env_.probe->moved_retries.inc();
}

} // namespace troupe::http
