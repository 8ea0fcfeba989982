#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>
#include <caf/message.hpp>

namespace troupe::runtime {

/// Work for a bridge actor: runs in its context. Local only (a closure).
struct bridge_job {
  std::function<void(caf::event_based_actor*)> run;
};

} // namespace troupe::runtime

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::bridge_job)

namespace troupe::runtime {

/// How threads that are not actors (the HTTP edge's I/O threads) talk to
/// actors without blocking: a few event-based "bridge" actors take a job
/// (an anon_send, no spawn per request), send the request from their own
/// context and run the continuation there with the reply or the error
/// (a request timeout included). A continuation may ask again (the next
/// step of a request) or hand its result back to the I/O thread; it must
/// not block.
///
/// Owner: the HTTP edge (one per node), created when it starts and stopped
/// with it; thread-safe.
class bridge {
public:
  bridge(caf::actor_system& sys, size_t actors);
  ~bridge();
  bridge(const bridge&) = delete;
  bridge& operator=(const bridge&) = delete;

  /// Sends `msg` to `dest` as a request with `timeout`; `k` gets the reply
  /// of type T or the error, in a bridge actor's context.
  ///
  /// The deadline is the bridge actor's own (a sorted index it sweeps a few
  /// times a second), not CAF's: CAF 0.17 gives every request with a
  /// timeout an entry in its clock thread (a wake-up of that thread) that
  /// is never cancelled, and fires later as one more message to the
  /// requester, reply or not. A reply after the deadline is dropped; the
  /// handler CAF keeps for a reply that never comes holds an id only.
  template <class T, class Handle, class Message>
  void ask(const Handle& dest, std::chrono::milliseconds timeout,
           Message msg, std::function<void(caf::expected<T>)> k) {
    if (!dest) {
      k(caf::expected<T>{caf::sec::invalid_argument});
      return;
    }
    post(bridge_job{[=, msg = std::move(msg)](
                      caf::event_based_actor* self) mutable {
      auto kp = std::make_shared<std::function<void(caf::expected<T>)>>(
        std::move(k));
      auto id = track(self, timeout, [kp](caf::error err) {
        (*kp)(caf::expected<T>{std::move(err)});
      });
      std::weak_ptr<std::function<void(caf::expected<T>)>> w = kp;
      self->request(dest, caf::infinite, std::move(msg))
        .then(
          [self, id, w](T& reply) {
            auto kp = w.lock();
            if (kp && settle(self, id))
              (*kp)(caf::expected<T>{std::move(reply)});
          },
          [self, id, w](caf::error& err) {
            auto kp = w.lock();
            if (kp && settle(self, id))
              (*kp)(caf::expected<T>{std::move(err)});
          });
    }});
  }

  /// Runs `k` after `delay` in a bridge actor's context (a retry timer).
  void after(std::chrono::milliseconds delay, std::function<void()> k);

  /// Stops the bridge actors; later jobs go nowhere. Idempotent.
  void stop();

private:
  void post(bridge_job job);

  /// Files a request's deadline in bridge actor `self`; `expire` runs if no
  /// settle() for the returned id comes before it.
  static uint64_t track(caf::event_based_actor* self,
                        std::chrono::milliseconds timeout,
                        std::function<void(caf::error)> expire);
  /// Takes the request's deadline out; false if it expired already.
  static bool settle(caf::event_based_actor* self, uint64_t id);

  /// Fixed after construction (read by any thread).
  std::vector<caf::actor> actors_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> stopped_{false};
};

/// Blocking variant for tests and tools (never on a hot path): a
/// short-lived actor sends the request and the calling thread waits.
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
