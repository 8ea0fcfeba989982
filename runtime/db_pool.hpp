#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/typed_response_promise.hpp>

#include "runtime/atoms.hpp"
#include "storage/pg.hpp"

namespace troupe::runtime {

/// A unit of blocking database work, run by one of the pool's detached
/// workers on its own connection. Local only (it carries a closure).
struct db_job {
  std::function<caf::error(storage::connection&)> run;
};

} // namespace troupe::runtime

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::db_job)

namespace troupe::runtime {

/// Spawns the database pool: a dispatcher plus `workers` detached actors,
/// each owning one connection to `url`. The dispatcher hands each job to an
/// idle worker (a shared queue, so one slow job never holds up others) and
/// queues at most `max_queued` jobs; beyond that it answers `overloaded`.
/// Every actor that needs PostgreSQL outside the ingest path goes through
/// it, with db_call below. Owner: runtime::node; stops with the system.
/// `name` labels its metrics (pool="primary", pool="replica-0", ...).
caf::actor spawn_db_pool(caf::actor_system& sys, const std::string& url,
                         size_t workers, int64_t connect_timeout_s,
                         size_t max_queued = 10000,
                         const std::string& name = "primary");

/// Runs `fn(connection&) -> caf::expected<T>` on the pool and calls
/// `k(caf::expected<T>)` in `self`'s context with the outcome (including a
/// request timeout). Use from event-based actors only.
/// With `awaited`, the actor handles no other message until the outcome
/// arrives (used to load an actor's state before it serves anything).
template <class T, class Self, class F, class K>
void db_call(Self* self, const caf::actor& pool, F fn, K k,
             bool awaited = false,
             std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto out = std::make_shared<std::optional<T>>();
  db_job job{[fn = std::move(fn), out](storage::connection& c) mutable
             -> caf::error {
    auto r = fn(c);
    if (!r)
      return std::move(r.error());
    out->emplace(std::move(*r));
    return caf::none;
  }};
  auto on_ok = [out, k](ok_atom) mutable {
    k(caf::expected<T>{std::move(**out)});
  };
  auto on_err = [k](caf::error& err) mutable {
    k(caf::expected<T>{std::move(err)});
  };
  if (awaited)
    self->request(pool, timeout, std::move(job)).await(on_ok, on_err);
  else
    self->request(pool, timeout, std::move(job)).then(on_ok, on_err);
}

/// Runs `fn(connection&) -> caf::expected<T>` on the pool and answers the
/// current request with its outcome: the body of a handler whose whole
/// work is one database job.
template <class T, class Self, class F>
caf::typed_response_promise<T> db_reply(Self* self, const caf::actor& pool,
                                        F fn) {
  auto rp = self->template make_response_promise<T>();
  db_call<T>(self, pool, std::move(fn), [rp](caf::expected<T> r) mutable {
    if (r)
      rp.deliver(std::move(*r));
    else
      rp.deliver(std::move(r.error()));
  });
  return rp;
}

} // namespace troupe::runtime
