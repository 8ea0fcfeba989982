#include "runtime/bridge.hpp"

#include <caf/all.hpp>

#include "runtime/atoms.hpp"

namespace troupe::runtime {

namespace {

struct bridge_state {
  std::string name = "bridge";
};

caf::behavior bridge_actor(caf::stateful_actor<bridge_state>* self) {
  return {
    [=](bridge_job& job) { job.run(self); },
    [=](stop_atom) { self->quit(); },
  };
}

} // namespace

bridge::bridge(caf::actor_system& sys, size_t actors) {
  for (size_t i = 0; i < std::max<size_t>(1, actors); ++i)
    actors_.push_back(sys.spawn(bridge_actor));
}

bridge::~bridge() {
  stop();
}

void bridge::post(bridge_job job) {
  if (actors_.empty())
    return;
  auto i = next_.fetch_add(1, std::memory_order_relaxed) % actors_.size();
  caf::anon_send(actors_[i], std::move(job));
}

void bridge::after(std::chrono::milliseconds delay, std::function<void()> k) {
  post(bridge_job{[delay, k = std::move(k)](caf::event_based_actor* self) {
    self->delayed_send(self, delay, bridge_job{[k](caf::event_based_actor*) {
                         k();
                       }});
  }});
}

void bridge::stop() {
  // The handles stay: posting to a stopped actor drops the job, and other
  // threads may still post while we stop.
  if (stopped_.exchange(true))
    return;
  for (auto& a : actors_)
    caf::anon_send(a, stop_atom::value);
}

} // namespace troupe::runtime
