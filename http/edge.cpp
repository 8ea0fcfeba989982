#include "http/edge.hpp"

#include <atomic>
#include <chrono>
#include <memory>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "http/call.hpp"
#include "http/client_address.hpp"
#include "http/console.hpp"
#include "http/errc.hpp"
#include "http/logger.hpp"
#include "http/parse.hpp"
#include "http/probe.hpp"
#include "http/router.hpp"
#include "http/routes.hpp"
#include "http/server.hpp"
#include "runtime/atoms.hpp"
#include "runtime/bridge.hpp"
#include "runtime/crash.hpp"
#include "runtime/node.hpp"

namespace troupe::http {

namespace {

using namespace std::chrono;

/// The HTTP edge of one node: the server, the route table, the bridge to
/// the actors, and what the routes share (edge_env).
///
/// Lifecycle: start() after the actors (it reads their handles once);
/// stop() first on shutdown: long-polls answer now, the server stops
/// accepting, requests in flight get up to `stop_grace` to finish, then the
/// bridge stops.
class edge {
public:
  edge(runtime::node& n, std::shared_ptr<const actors::handles> actors)
    : node_(n),
      actors_(std::move(actors)),
      throttle_(n.cfg().auth.max_failed_logins_per_address,
                seconds(n.cfg().auth.failed_login_window_s)) {
  }

  caf::error start();
  void stop();
  void reload();

private:
  void handle(exchange_ptr x);
  server_config server_settings() const;

  runtime::node& node_;
  std::shared_ptr<const actors::handles> actors_;
  address_throttle throttle_;
  edge_probe probe_;
  router routes_;
  std::unique_ptr<runtime::bridge> bridge_;
  std::unique_ptr<edge_env> env_;
  std::unique_ptr<server> server_;
  std::atomic<uint64_t> next_req_{0};
};

server_config edge::server_settings() const {
  auto& h = node_.cfg().http;
  server_config s;
  s.listen = h.listen;
  s.io_threads = h.io_threads;
  s.backlog = static_cast<int>(h.backlog);
  s.max_connections = h.max_connections;
  s.max_header_bytes = h.max_header_bytes;
  s.max_body_bytes = h.max_body_bytes;
  s.header_timeout = milliseconds(h.header_timeout_ms);
  s.body_timeout = milliseconds(h.body_timeout_ms);
  s.idle_timeout = seconds(h.keep_alive_s);
  s.max_pipelined = h.max_pipelined;
  s.gzip_min_bytes = h.gzip_min_bytes;
  s.tls_cert = h.tls_cert;
  s.tls_key = h.tls_key;
  return s;
}

void edge::handle(exchange_ptr x) {
  // A stack overflow on this I/O thread still reaches the crash handler.
  runtime::ensure_signal_stack();
  auto& req = x->req();
  auto rid = req.header("X-Request-Id");
  auto req_id = valid_id(rid) ? rid
                              : node_.id() + "-" + std::to_string(++next_req_);
  auto m = routes_.match(req.method, req.path);
  if (!m.hit && m.allowed.empty() && console_request(req))
    return serve_console(std::make_shared<call>(
      *env_, std::move(x), "console", std::vector<std::string>{}, req_id));
  if (!m.hit) {
    auto c = std::make_shared<call>(*env_, std::move(x), "unmatched",
                                    std::vector<std::string>{}, req_id);
    if (!m.allowed.empty()) {
      std::string allow;
      for (auto& a : m.allowed)
        allow += (allow.empty() ? "" : ", ") + a;
      c->add_header("Allow", allow);
      return c->fail(api_error{405, "method_not_allowed",
                               c->req().method + " is not allowed here"});
    }
    return c->fail(api_error{404, "not_found", "no such endpoint"});
  }
  auto c = std::make_shared<call>(*env_, std::move(x), m.hit->pattern,
                                  std::move(m.params), std::move(req_id));
  if (node_.stopping() && m.hit->pattern != "/healthz"
      && m.hit->pattern != "/readyz" && m.hit->pattern != "/metrics")
    return c->fail(api_error{503, "unavailable", "node is shutting down", 1});
  m.hit->fn(c);
}

caf::error edge::start() {
  auto& cfg = node_.cfg();
  bridge_ = std::make_unique<runtime::bridge>(
    node_.system(), std::max<size_t>(2, std::thread::hardware_concurrency()));
  env_ = std::make_unique<edge_env>(node_, cfg, node_.secret_key());
  env_->bridge = bridge_.get();
  env_->devices = actors_->devices;
  env_->sessions = actors_->sessions;
  env_->users = actors_->users;
  env_->fleet = actors_->fleet;
  env_->admin = actors_->admin;
  env_->alerts = actors_->alerts;
  env_->throttle = &throttle_;
  env_->probe = &probe_;
  env_->open_connections = [this] {
    return server_ ? server_->open_connections() : 0;
  };
  add_device_routes(routes_);
  add_user_routes(routes_);
  add_admin_routes(routes_);
  add_analysis_routes(routes_);
  add_ops_routes(routes_);
  server_hooks hooks;
  hooks.refused = [this](std::string_view reason) { probe_.refused(reason); };
  hooks.log = [](std::string_view level, std::string msg) {
    if (level == "error")
      log().error("{}", msg);
    else if (level == "warn")
      log().warn("{}", msg);
    else
      log().info("{}", msg);
  };
  server_ = std::make_unique<server>(
    server_settings(), [this](exchange_ptr x) { handle(std::move(x)); },
    [](unsigned status, std::string code, std::string message) {
      response r;
      r.status = status;
      r.body = error_body(api_error{static_cast<int>(status), code, message,
                                    status == 503 ? 1 : 0});
      if (status == 503)
        r.headers.push_back({"Retry-After", "1"});
      return r;
    },
    std::move(hooks));
  if (auto why = server_->start(); !why.empty())
    return caf::make_error(caf::sec::runtime_error,
                           "cannot serve HTTP on " + cfg.http.listen + ": "
                             + why);
  log().info("http edge listening on {} ({}) io_threads={} "
             "max_connections={}",
             cfg.http.listen, cfg.http.tls_cert.empty() ? "http" : "https",
             cfg.http.io_threads, cfg.http.max_connections);
  return caf::none;
}

void edge::reload() {
  if (!server_ || node_.cfg().http.tls_cert.empty())
    return;
  if (auto why = server_->reload_tls(); !why.empty())
    log().error("TLS certificate not reloaded (the old one stays): {}", why);
  else
    log().info("TLS certificate reloaded");
}

void edge::stop() {
  if (!server_)
    return;
  // Waiting long-polls answer now; new ones do not wait.
  env_->draining = true;
  caf::anon_send(env_->devices.handle, runtime::broadcast_atom::value,
                 caf::make_message(runtime::drain_atom::value));
  log().info("http edge stopping: refusing new requests, finishing "
             "in-flight ones");
  server_->stop(milliseconds(node_.cfg().http.request_timeout_ms));
  bridge_->stop();
  log().info("http edge stopped");
}

} // namespace

void install(runtime::node& n,
             std::shared_ptr<const actors::handles> actors) {
  auto e = std::make_shared<edge>(n, std::move(actors));
  n.add_service(
    "http", [e](runtime::node&) { return e->start(); },
    [e](runtime::node&) { e->stop(); });
  n.on_reload([e] { e->reload(); });
}

} // namespace troupe::http
