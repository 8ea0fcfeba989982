#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "actors/install.hpp"
#include "cluster-config/node_config.hpp"
#include "http/errc.hpp"
#include "http/router.hpp"
#include "http/server.hpp"
#include "runtime/atoms.hpp"
#include "runtime/bridge.hpp"
#include "runtime/errc.hpp"
#include "runtime/local_entities.hpp"
#include "runtime/typed.hpp"

namespace troupe::runtime {
class node;
} // namespace troupe::runtime

namespace troupe::http {

class address_throttle;
class edge_probe;

/// What every route shares: the node, its settings, the actors the edge
/// talks to, and the bridge. Built by the edge at start; the handles never
/// change afterwards, so any I/O or bridge thread may read them.
struct edge_env {
  edge_env(runtime::node& n, const config::node_config& c,
           std::string key)
    : node(n),
      cfg(c.http),
      ingest(c.ingest),
      cluster(c.cluster),
      secret_key(std::move(key)) {
  }

  runtime::node& node;
  config::http_config cfg;
  config::ingest_config ingest;
  config::cluster_config cluster;
  /// Keyed hashes of session tokens use the cluster's secret key.
  std::string secret_key;
  runtime::bridge* bridge = nullptr;
  runtime::region_of<actors::device_actor> devices;
  runtime::region_of<actors::session_actor> sessions;
  runtime::region_of<actors::user_actor> users;
  actors::fleet_actor fleet;
  actors::admin_actor admin;
  actors::alerts_actor alerts;
  address_throttle* throttle = nullptr;
  /// Long-polls held now (bounded by cfg.max_long_polls).
  std::atomic<int64_t> long_polls{0};
  /// True once the node drains: long-polls answer at once.
  std::atomic<bool> draining{false};
  edge_probe* probe = nullptr;
  /// Connections open on the server now (for /metrics).
  std::function<size_t()> open_connections;
};

/// One request on its way through the edge: the exchange with the server,
/// the route and its parameters, the request id, and helpers that keep each
/// handler to a few lines (authenticate, parse, one request, render).
///
/// Lifetime: a shared_ptr held by every continuation of the request; it
/// answers once (later answers are ignored) and records the request's
/// metrics and log line when it does. Continuations run on bridge actors;
/// none blocks.
class call : public std::enable_shared_from_this<call> {
public:
  using json = nlohmann::json;
  using clock = std::chrono::steady_clock;

  call(edge_env& env, exchange_ptr x, std::string route,
       std::vector<std::string> params, std::string req_id);
  /// A call dropped unanswered (a lost continuation) answers 503 here, so
  /// no client waits for ever.
  ~call();

  edge_env& env() { return env_; }
  const request& req() const { return x_->req(); }
  const std::string& req_id() const { return req_id_; }
  const std::string& route() const { return route_; }

  /// The i-th `{param}` of the route, raw.
  const std::string& param(size_t i = 0) const { return params_.at(i); }
  /// The i-th parameter as an id; answers 404 (and nullopt) when it cannot
  /// be one.
  std::optional<std::string> id_param(size_t i = 0);
  /// A query parameter; nullopt when absent.
  std::optional<std::string> query(const char* name) const {
    return req().param(name);
  }
  /// The client's address (X-Forwarded-For from a trusted proxy).
  std::string client_address() const;

  // -- answers ----------------------------------------------------------------

  void reply(unsigned status, const json& body);
  /// A body that is not JSON (Prometheus text, static files).
  void reply_text(unsigned status, std::string content_type,
                  std::string body);
  void fail(const api_error& e);
  void fail(const caf::error& err) { fail(to_api_error(err)); }
  /// A header for the answer (Set-Cookie, ...), set before replying.
  void add_header(std::string name, std::string value);
  /// The status answered; 0 before.
  unsigned status() const { return status_.load(); }
  /// Runs fn if the client goes away before the answer.
  void on_cancel(std::function<void()> fn) { x_->on_cancel(std::move(fn)); }

  // -- bodies -----------------------------------------------------------------

  /// The body as JSON (media type application/json or none); answers
  /// 415/400 and returns nullopt when it is not.
  std::optional<json> json_body();

  // -- actors -----------------------------------------------------------------

  /// Asks the typed actor `dest`; `k` gets the reply its interface promises
  /// for `Message` (a mismatch does not compile). An error answers the
  /// request.
  template <class Handle, class Message, class F>
  void ask(const Handle& dest, Message msg, F k,
           std::optional<std::chrono::milliseconds> timeout = {}) {
    using T = runtime::reply_of<Handle, Message>;
    std::function<void(T&)> fn = std::move(k);
    ask_result(dest, std::move(msg),
               [self = shared_from_this(), fn](caf::expected<T> r) {
                 if (!r)
                   return self->fail(r.error());
                 fn(*r);
               },
               timeout);
  }

  /// As ask, but `k` gets the error too.
  template <class Handle, class Message, class F>
  void ask_result(const Handle& dest, Message msg, F k,
                  std::optional<std::chrono::milliseconds> timeout = {}) {
    using T = runtime::reply_of<Handle, Message>;
    std::function<void(caf::expected<T>)> fn = std::move(k);
    env_.bridge->ask<T>(dest, timeout.value_or(request_timeout()),
                        std::move(msg), std::move(fn));
  }

  /// Asks an actor without a typed interface (a region's own messages).
  template <class T, class Message>
  void ask_dynamic(const caf::actor& dest, Message msg,
                   std::function<void(caf::expected<T>)> k) {
    env_.bridge->ask<T>(dest, request_timeout(),
                        caf::make_message(std::move(msg)), std::move(k));
  }

  /// Asks the virtual actor `key` of `region`; `k` gets the reply the
  /// entity's interface promises for `Message`. While the key's shard moves
  /// between nodes the region answers `moved`: the request is retried on a
  /// timer (never a sleeping thread) until the request deadline, so a
  /// handoff shows as a little latency, not an error.
  template <class Entity, class Message, class F>
  void ask_entity(const runtime::region_of<Entity>& region, std::string key,
                  Message msg, F k,
                  std::optional<std::chrono::milliseconds> timeout = {}) {
    using T = runtime::reply_of<Entity, Message>;
    std::function<void(T&)> fn = std::move(k);
    ask_entity_result(
      region, std::move(key), std::move(msg),
      [self = shared_from_this(), fn](caf::expected<T> r) {
        if (!r)
          return self->fail(r.error());
        fn(*r);
      },
      timeout);
  }

  /// As ask_entity, but `k` gets the error too.
  template <class Entity, class Message, class F>
  void ask_entity_result(const runtime::region_of<Entity>& region,
                         std::string key, Message msg, F k,
                         std::optional<std::chrono::milliseconds> timeout
                         = {}) {
    using T = runtime::reply_of<Entity, Message>;
    std::function<void(caf::expected<T>)> fn = std::move(k);
    auto inner = caf::make_message(std::move(msg));
    auto t = timeout.value_or(request_timeout());
    auto deadline = clock::now() + t;
    auto via_region = [self = shared_from_this(), h = region.handle, key,
                       inner, t, deadline](
                        std::function<void(caf::expected<T>)> fn) mutable {
      self->entity_attempt<T>(
        h, caf::make_message(runtime::route_atom::value, std::move(key),
                             std::move(inner)),
        std::move(fn), t, deadline, std::chrono::milliseconds(10));
    };
    // An entity served here gets the request straight away; one that is
    // stopping (`moved`) or gone asks the region, which knows where it is.
    if (auto h = region.local ? region.local->find(key) : caf::actor{}) {
      env_.bridge->ask<T>(
        h, t, std::move(inner),
        [fn = std::move(fn), via_region](caf::expected<T> r) mutable {
          if (r || !stale_entity(r.error()))
            return fn(std::move(r));
          via_region(std::move(fn));
        });
      return;
    }
    via_region(std::move(fn));
  }

  /// The request's media type: Content-Type without parameters, lowercase.
  std::string media_type() const;

  /// The user session token: the bearer token, else the troupe_session
  /// cookie. Answers 401 (and returns nullopt) when there is none, and 403
  /// when a state-changing request carries only the cookie and comes from
  /// another site's page (csrf.hpp).
  std::optional<std::string> session_token();

  /// Authenticates a user (session cookie or bearer token, via the
  /// session's actor); `k` gets the caller, else the request answers 401.
  void user(std::function<void(const actors::caller&)> k);

  /// A device's bearer token and the device id it is for; answers 401 and
  /// returns nullopt when there is none or it is malformed.
  std::optional<std::string> device(std::string& token);

  /// How long one request may take (http.request_timeout_ms).
  std::chrono::milliseconds request_timeout() const {
    return std::chrono::milliseconds(env_.cfg.request_timeout_ms);
  }

  /// When the request arrived.
  clock::time_point started() const { return started_; }

private:

  template <class T>
  void entity_attempt(const caf::actor& region, caf::message envelope,
                      std::function<void(caf::expected<T>)> k,
                      std::chrono::milliseconds timeout,
                      clock::time_point deadline,
                      std::chrono::milliseconds backoff) {
    auto self = shared_from_this();
    auto t0 = clock::now();
    // No attempt outlives the request's deadline.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - t0);
    if (left.count() <= 0)
      return k(caf::expected<T>{caf::sec::request_timeout});
    env_.bridge->ask<T>(
      region, std::min(timeout, left), envelope,
      [=](caf::expected<T> r) mutable {
        self->observe_remote(envelope, t0);
        if (r || r.error() != runtime::errc::moved
            || clock::now() + backoff > deadline)
          return k(std::move(r));
        self->count_retry();
        self->env_.bridge->after(backoff, [=]() mutable {
          self->entity_attempt<T>(region, std::move(envelope), std::move(k),
                                  timeout, deadline,
                                  std::min(backoff * 2,
                                           std::chrono::milliseconds(100)));
        });
      });
  }

  /// True for the errors of an entity reached directly that no longer
  /// serves (it stops, or it is gone): its region knows where to go.
  static bool stale_entity(const caf::error& err);

  void observe_remote(const caf::message& envelope, clock::time_point t0);
  void count_retry();
  void finish(unsigned status);

  edge_env& env_;
  exchange_ptr x_;
  std::string route_;
  std::vector<std::string> params_;
  std::string req_id_;
  clock::time_point started_ = clock::now();
  std::vector<header_field> headers_;
  std::atomic<unsigned> status_{0};
};

} // namespace troupe::http
