#pragma once

#include <chrono>
#include <future>
#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>
#include <caf/message.hpp>

namespace troupe::runtime {

/// Sends `msg` to `dest` as a request from a short-lived event-based actor
/// and blocks the calling (non-actor) thread until the reply, an error, or
/// `timeout`. This is how the HTTP edge's handler threads talk to actors:
/// one spawn (~µs) per request, not a blocking scoped_actor (~100 µs).
template <class T>
caf::expected<T> ask(caf::actor_system& sys, const caf::actor& dest,
                     std::chrono::milliseconds timeout, caf::message msg) {
  auto done = std::make_shared<std::promise<caf::expected<T>>>();
  auto fut = done->get_future();
  sys.spawn([=](caf::event_based_actor* self) mutable {
    self->request(dest, timeout, std::move(msg))
      .then([=](T& reply) { done->set_value(std::move(reply)); },
            [=](caf::error& err) { done->set_value(std::move(err)); });
  });
  return fut.get();
}

} // namespace troupe::runtime
