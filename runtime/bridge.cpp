#include "runtime/bridge.hpp"

#include <map>
#include <unordered_map>

#include <caf/all.hpp>

#include "runtime/atoms.hpp"

namespace troupe::runtime {

namespace {

using clock = std::chrono::steady_clock;

/// How often a bridge actor with requests in flight looks for expired ones:
/// a deadline fires at most this late.
constexpr auto sweep_interval = std::chrono::milliseconds(50);

struct bridge_state {
  std::string name = "bridge";
  uint64_t next_id = 0;
  /// Requests in flight by deadline, and their expiry by id.
  std::multimap<clock::time_point, uint64_t> deadlines;
  struct pending {
    std::multimap<clock::time_point, uint64_t>::iterator at;
    std::function<void(caf::error)> expire;
  };
  std::unordered_map<uint64_t, pending> in_flight;
  bool sweep_armed = false;
};

using bridge_actor_t = caf::stateful_actor<bridge_state>;

void arm_sweep(bridge_actor_t* self) {
  if (self->state.sweep_armed || self->state.in_flight.empty())
    return;
  self->state.sweep_armed = true;
  self->delayed_send(self, sweep_interval, tick_atom::value);
}

void sweep(bridge_actor_t* self) {
  auto& st = self->state;
  st.sweep_armed = false;
  auto now = clock::now();
  while (!st.deadlines.empty() && st.deadlines.begin()->first <= now) {
    auto id = st.deadlines.begin()->second;
    st.deadlines.erase(st.deadlines.begin());
    auto p = st.in_flight.find(id);
    if (p == st.in_flight.end())
      continue;
    auto expire = std::move(p->second.expire);
    st.in_flight.erase(p);
    expire(caf::make_error(caf::sec::request_timeout));
  }
  arm_sweep(self);
}

caf::behavior bridge_actor(bridge_actor_t* self) {
  return {
    [=](bridge_job& job) { job.run(self); },
    [=](tick_atom) { sweep(self); },
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

uint64_t bridge::track(caf::event_based_actor* self,
                       std::chrono::milliseconds timeout,
                       std::function<void(caf::error)> expire) {
  // Every job runs in a bridge actor (bridge_job's only receiver).
  auto b = static_cast<bridge_actor_t*>(self);
  auto& st = b->state;
  auto id = st.next_id++;
  auto at = st.deadlines.emplace(clock::now() + timeout, id);
  st.in_flight.emplace(id, bridge_state::pending{at, std::move(expire)});
  arm_sweep(b);
  return id;
}

bool bridge::settle(caf::event_based_actor* self, uint64_t id) {
  auto& st = static_cast<bridge_actor_t*>(self)->state;
  auto p = st.in_flight.find(id);
  if (p == st.in_flight.end())
    return false;
  st.deadlines.erase(p->second.at);
  st.in_flight.erase(p);
  return true;
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
