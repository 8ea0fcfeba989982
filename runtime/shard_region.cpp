#include "runtime/shard_region.hpp"

#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "runtime/atoms.hpp"
#include "runtime/errc.hpp"
#include "runtime/logger.hpp"
#include "runtime/metrics.hpp"

namespace troupe::runtime {

namespace {

struct stopping_entry {
  caf::actor_addr addr;
  std::vector<std::pair<caf::response_promise, caf::message>> buffered;
};

struct region_state {
  std::string name = "shard_region";
  std::string kind;
  entity_factory make;
  shard_map map;
  std::unordered_map<std::string, caf::actor> active;
  std::unordered_map<caf::actor_addr, std::string> keys;
  std::unordered_map<std::string, stopping_entry> stopping;
  bool draining = false;
  gauge* active_gauge = nullptr;
  counter* spawned = nullptr;
  counter* passivated = nullptr;
};

using region_actor = caf::stateful_actor<region_state>;

caf::actor spawn_entity(region_actor* self, const std::string& key) {
  auto& st = self->state;
  auto h = st.make(self->system(), caf::actor_cast<caf::actor>(self), key);
  self->monitor(h);
  st.active.emplace(key, h);
  st.keys.emplace(h.address(), key);
  st.active_gauge->set(static_cast<int64_t>(st.active.size()));
  st.spawned->inc();
  return h;
}

void maybe_finish_drain(region_actor* self) {
  auto& st = self->state;
  if (st.draining && st.active.empty() && st.stopping.empty())
    self->quit();
}

caf::behavior region(region_actor* self, std::string kind,
                     entity_factory factory, shard_map map) {
  auto& st = self->state;
  st.kind = kind;
  st.name = "region." + kind;
  st.make = std::move(factory);
  st.map = std::move(map);
  auto& reg = metrics();
  auto lbl = "kind=\"" + kind + "\"";
  st.active_gauge = &reg.get_gauge("troupe_actors", "Active virtual actors by "
                                                    "kind",
                                   lbl);
  st.spawned = &reg.get_counter("troupe_actor_activations_total",
                                "Virtual actors activated", lbl);
  st.passivated = &reg.get_counter("troupe_actor_passivations_total",
                                   "Virtual actors passivated", lbl);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto k = st.keys.find(dm.source);
    if (k == st.keys.end())
      return;
    auto key = k->second;
    st.keys.erase(k);
    auto s = st.stopping.find(key);
    if (s != st.stopping.end() && s->second.addr == dm.source) {
      auto buffered = std::move(s->second.buffered);
      st.stopping.erase(s);
      st.passivated->inc();
      if (!buffered.empty() && !st.draining) {
        auto h = spawn_entity(self, key);
        for (auto& [rp, msg] : buffered)
          rp.delegate(h, std::move(msg));
      } else {
        for (auto& [rp, msg] : buffered)
          rp.deliver(make_runtime_error(errc::shutting_down,
                                        "node is shutting down"));
      }
    } else {
      auto a = st.active.find(key);
      if (a != st.active.end() && a->second.address() == dm.source) {
        if (dm.reason && dm.reason != caf::exit_reason::normal)
          log().warn("entity crashed kind={} key={} reason={}", st.kind, key,
                     caf::to_string(dm.reason));
        st.active.erase(a);
      }
    }
    st.active_gauge->set(static_cast<int64_t>(st.active.size()));
    maybe_finish_drain(self);
  });
  return {
    [=](route_atom, const std::string& key, caf::message& msg) {
      auto& st = self->state;
      if (auto s = st.stopping.find(key); s != st.stopping.end()) {
        s->second.buffered.emplace_back(self->make_response_promise(),
                                        std::move(msg));
        return;
      }
      if (st.draining) {
        auto rp = self->make_response_promise();
        rp.deliver(make_runtime_error(errc::shutting_down,
                                      "node is shutting down"));
        return;
      }
      auto a = st.active.find(key);
      auto h = a != st.active.end() ? a->second : spawn_entity(self, key);
      self->delegate(h, std::move(msg));
    },
    [=](passivate_atom, const std::string& key) {
      auto& st = self->state;
      auto a = st.active.find(key);
      auto sender = self->current_sender();
      if (a == st.active.end() || a->second.address() != sender)
        return;
      st.stopping[key].addr = a->second.address();
      self->send(a->second, stop_atom::value);
      st.active.erase(a);
    },
    [=](count_atom) { return static_cast<int64_t>(self->state.active.size()); },
    [=](broadcast_atom, caf::message& msg) {
      for (auto& [key, h] : self->state.active)
        self->send(h, msg);
    },
    [=](stop_atom) {
      auto& st = self->state;
      st.draining = true;
      log().info("draining region kind={} active={}", st.kind,
                 st.active.size());
      for (auto& [key, h] : st.active) {
        st.stopping[key].addr = h.address();
        self->send(h, stop_atom::value);
      }
      st.active.clear();
      maybe_finish_drain(self);
    },
  };
}

} // namespace

caf::actor spawn_shard_region(caf::actor_system& sys, std::string kind,
                              entity_factory factory, shard_map map) {
  return sys.spawn(region, std::move(kind), std::move(factory),
                   std::move(map));
}

} // namespace troupe::runtime
