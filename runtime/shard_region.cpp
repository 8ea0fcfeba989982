#include "runtime/shard_region.hpp"

#include <chrono>
#include <deque>
#include <limits>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "runtime/atoms.hpp"
#include "runtime/errc.hpp"
#include "runtime/local_entities.hpp"
#include "runtime/logger.hpp"
#include "runtime/metrics.hpp"

namespace troupe::runtime {

namespace {

struct stopping_entry {
  caf::actor_addr addr;
  std::vector<std::pair<caf::response_promise, caf::message>> buffered;
};

/// A request forwarded to another node: a copy of its promise, so the
/// requester can be told `moved` at once if that node goes away before
/// answering (CAF 0.17 would let it wait for its timeout). The owner's
/// answer goes straight to the requester; a late `moved` for a request
/// already answered is dropped by CAF.
struct in_flight {
  std::chrono::steady_clock::time_point sent;
  caf::response_promise rp;
};

struct region_state {
  std::string name = "shard_region";
  std::string kind;
  std::string self;
  entity_factory make;
  shard_map map;
  std::map<std::string, caf::actor> peers;
  /// Forwarded requests per peer region, oldest first.
  std::map<caf::actor_addr, std::deque<in_flight>> forwarded_to;
  /// Forwarded requests are remembered this long (the edge's deadline).
  std::chrono::milliseconds forward_memory{10'000};
  /// Serving ends when the lease was not renewed in time (cluster only).
  lease_clock lease;
  bool fenced = false;
  /// Shards gained in a version above this are not served yet.
  int64_t barrier = 0;
  /// Per shard: the map version in which this node gained it.
  std::vector<int64_t> gained_at;
  std::unordered_map<std::string, caf::actor> active;
  /// What `active` holds, for senders on other threads; may be null.
  std::shared_ptr<local_entities> local;
  std::unordered_map<caf::actor_addr, std::string> keys;
  std::unordered_map<std::string, stopping_entry> stopping;
  /// Handoff acknowledgements waiting for entities of lost shards to stop.
  std::vector<std::pair<caf::response_promise, int64_t>> pending_release;
  bool draining = false;
  gauge* active_gauge = nullptr;
  gauge* owned_gauge = nullptr;
  gauge* served_gauge = nullptr;
  counter* spawned = nullptr;
  counter* passivated = nullptr;
  counter* forwarded = nullptr;
  counter* moved = nullptr;
  counter* shard_moves = nullptr;
};

using region_actor = caf::stateful_actor<region_state>;

caf::error moved_error(const std::string& key) {
  return make_runtime_error(errc::moved, "the shard of " + key
                                           + " is moving; retry");
}

bool serves(region_actor* self, uint32_t shard) {
  auto& st = self->state;
  return !st.fenced && st.map.shards() > 0 && st.map.owner(shard) == st.self
         && st.gained_at[shard] <= st.barrier && (!st.lease || st.lease->valid());
}

/// Remembers a forwarded request (and forgets those past the deadline).
void remember(region_actor* self, const caf::actor& peer,
              caf::response_promise rp) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  auto& q = st.forwarded_to[peer.address()];
  while (!q.empty() && now - q.front().sent > st.forward_memory)
    q.pop_front();
  q.push_back({now, std::move(rp)});
}

/// A peer region is gone: what was forwarded to it answers `owner_lost`
/// now, and nothing more goes there until membership names a new owner.
void peer_down(region_actor* self, const caf::actor_addr& addr) {
  auto& st = self->state;
  for (auto it = st.peers.begin(); it != st.peers.end();)
    it = it->second.address() == addr ? st.peers.erase(it) : std::next(it);
  auto q = st.forwarded_to.find(addr);
  if (q == st.forwarded_to.end())
    return;
  auto pending = std::move(q->second);
  st.forwarded_to.erase(q);
  if (!pending.empty())
    log().warn("region={} peer region down: answering {} forwarded "
               "requests at once",
               st.kind, pending.size());
  // Not `moved`: the owner may have served them before it went, and only
  // the client knows whether a retry is harmless (a batch id makes it so).
  for (auto& f : pending)
    f.rp.deliver(make_runtime_error(errc::owner_lost,
                                    "the node serving this request went "
                                    "away; retry"));
}

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

/// Delivers `msg` for `key` wherever it belongs, answering through `rp`.
void route(region_actor* self, const std::string& key, caf::message msg,
           caf::response_promise rp, bool forwarded) {
  auto& st = self->state;
  if (st.draining) {
    rp.deliver(make_runtime_error(errc::shutting_down,
                                  "node is shutting down"));
    return;
  }
  if (auto s = st.stopping.find(key); s != st.stopping.end()) {
    s->second.buffered.emplace_back(std::move(rp), std::move(msg));
    return;
  }
  auto shard = st.map.shards() > 0 ? st.map.shard_of(key) : 0;
  if (serves(self, shard)) {
    auto a = st.active.find(key);
    auto fresh = a == st.active.end();
    auto h = fresh ? spawn_entity(self, key) : a->second;
    rp.delegate(h, std::move(msg));
    // Published after its first message, which so stays the first.
    if (fresh && st.local)
      st.local->publish(key, h);
    return;
  }
  if (!forwarded && st.map.shards() > 0 && !st.fenced) {
    auto& owner = st.map.owner(shard);
    if (owner != st.self) {
      if (auto p = st.peers.find(owner); p != st.peers.end()) {
        st.forwarded->inc();
        remember(self, p->second, rp);
        rp.delegate(p->second, forward_atom::value, key, std::move(msg));
        return;
      }
    }
  }
  st.moved->inc();
  rp.deliver(moved_error(key));
}

/// Counts the shards this region serves right now (a cluster test checks
/// that, summed over all nodes, this never exceeds the shard count).
void update_served(region_actor* self) {
  int64_t n = 0;
  for (uint32_t s = 0; s < self->state.map.shards(); ++s)
    if (serves(self, s))
      ++n;
  self->state.served_gauge->set(n);
}

/// Takes `key`'s entity out of service: withdrawn from direct senders
/// first, then told to stop (the caller took it out of `active`).
void stop_entity(region_actor* self, const std::string& key,
                 const caf::actor& h) {
  auto& st = self->state;
  if (st.local)
    st.local->withdraw(key);
  st.stopping[key].addr = h.address();
  self->send(h, stop_atom::value);
}

void finish_releases(region_actor* self) {
  auto& st = self->state;
  if (st.pending_release.empty() || st.map.shards() == 0)
    return;
  // Released when no entity of a shard we do not serve remains.
  for (auto& [key, entry] : st.stopping) {
    auto shard = st.map.shard_of(key);
    if (st.map.owner(shard) != st.self)
      return;
  }
  for (auto& [rp, version] : st.pending_release)
    rp.deliver(version);
  st.pending_release.clear();
}

void maybe_finish_drain(region_actor* self) {
  auto& st = self->state;
  finish_releases(self);
  if (st.draining && st.active.empty() && st.stopping.empty())
    self->quit();
}

void apply(region_actor* self, placement& p) {
  auto& st = self->state;
  auto old = std::move(st.map);
  st.map = std::move(p.map);
  for (auto& [id, h] : p.peers)
    if (st.forwarded_to.emplace(h.address(), std::deque<in_flight>{}).second)
      self->monitor(h);
  st.peers = std::move(p.peers);
  auto was_fenced = st.fenced;
  st.fenced = p.fenced;
  if (st.gained_at.size() != st.map.shards())
    st.gained_at.assign(st.map.shards(), st.map.version());
  size_t owned = 0, moved = 0;
  for (uint32_t s = 0; s < st.map.shards(); ++s) {
    bool mine = st.map.owner(s) == st.self;
    bool was = old.shards() == st.map.shards() && old.owner(s) == st.self;
    if (mine && (!was || was_fenced))
      st.gained_at[s] = st.map.version();
    if (mine != was && old.shards() == st.map.shards())
      ++moved;
    owned += mine ? 1 : 0;
  }
  st.owned_gauge->set(static_cast<int64_t>(owned));
  st.shard_moves->inc(moved);
  // Stop the entities of shards this node no longer serves.
  std::vector<std::pair<std::string, caf::actor>> lost;
  for (auto& [key, h] : st.active) {
    auto shard = st.map.shard_of(key);
    if (st.fenced || st.map.owner(shard) != st.self)
      lost.emplace_back(key, h);
  }
  for (auto& [key, h] : lost) {
    st.active.erase(key);
    stop_entity(self, key, h);
  }
  st.active_gauge->set(static_cast<int64_t>(st.active.size()));
  // Everything a fence stopped is withdrawn: direct sends may resume.
  if (st.local)
    st.local->applied(p.fences);
  if (moved > 0 || !lost.empty())
    log().info("region={} map version={} owned={} moved={} releasing={}",
               st.kind, st.map.version(), owned, moved, lost.size());
}

caf::behavior region(region_actor* self, std::string kind,
                     entity_factory factory, shard_map map, std::string me,
                     bool clustered, lease_clock lease,
                     std::shared_ptr<local_entities> local) {
  auto& st = self->state;
  st.local = std::move(local);
  // However the region ends, nothing it published is sent to any more.
  self->attach_functor([l = st.local] {
    if (l)
      l->clear();
  });
  st.lease = std::move(lease);
  st.kind = kind;
  st.name = "region." + kind;
  st.self = std::move(me);
  st.make = std::move(factory);
  st.map = std::move(map);
  st.gained_at.assign(st.map.shards(), 0);
  st.barrier = clustered ? 0 : std::numeric_limits<int64_t>::max();
  auto& reg = metrics();
  auto lbl = "kind=\"" + kind + "\"";
  st.active_gauge = &reg.get_gauge("troupe_actors",
                                   "Active virtual actors by kind", lbl);
  st.owned_gauge = &reg.get_gauge("troupe_shards_owned",
                                  "Shards this node owns", lbl);
  st.owned_gauge->set(clustered ? 0 : static_cast<int64_t>(st.map.shards()));
  st.served_gauge = &reg.get_gauge("troupe_shards_served",
                                   "Shards this node serves now (owned and "
                                   "past the handoff barrier)",
                                   lbl);
  st.served_gauge->set(clustered ? 0 : static_cast<int64_t>(st.map.shards()));
  st.spawned = &reg.get_counter("troupe_actor_activations_total",
                                "Virtual actors activated", lbl);
  st.passivated = &reg.get_counter("troupe_actor_passivations_total",
                                   "Virtual actors passivated", lbl);
  st.forwarded = &reg.get_counter("troupe_forwarded_requests_total",
                                  "Requests forwarded to the owner node", lbl);
  st.moved = &reg.get_counter("troupe_moved_answers_total",
                              "Requests answered 'moved' (shard in motion)",
                              lbl);
  st.shard_moves = &reg.get_counter("troupe_shard_moves_total",
                                    "Shards gained or lost by this node", lbl);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto k = st.keys.find(dm.source);
    if (k == st.keys.end()) {
      if (st.forwarded_to.count(dm.source))
        peer_down(self, dm.source);
      return;
    }
    auto key = k->second;
    st.keys.erase(k);
    auto s = st.stopping.find(key);
    if (s != st.stopping.end() && s->second.addr == dm.source) {
      auto buffered = std::move(s->second.buffered);
      st.stopping.erase(s);
      st.passivated->inc();
      // Route what waited: to a fresh entity here, or to the new owner.
      for (auto& [rp, msg] : buffered)
        route(self, key, std::move(msg), std::move(rp), false);
    } else {
      auto a = st.active.find(key);
      if (a != st.active.end() && a->second.address() == dm.source) {
        if (dm.reason && dm.reason != caf::exit_reason::normal)
          log().warn("entity crashed kind={} key={} reason={}", st.kind, key,
                     caf::to_string(dm.reason));
        st.active.erase(a);
        if (st.local)
          st.local->withdraw(key);
      }
    }
    st.active_gauge->set(static_cast<int64_t>(st.active.size()));
    maybe_finish_drain(self);
  });
  return {
    [=](route_atom, const std::string& key, caf::message& msg) {
      route(self, key, std::move(msg), self->make_response_promise(), false);
    },
    [=](forward_atom, const std::string& key, caf::message& msg) {
      route(self, key, std::move(msg), self->make_response_promise(), true);
    },
    [=](passivate_atom, const std::string& key, const caf::actor_addr& who) {
      auto& st = self->state;
      auto a = st.active.find(key);
      // Only the entity itself passivates (not a stale one of the key).
      if (a == st.active.end() || a->second.address() != who)
        return;
      auto h = a->second;
      st.active.erase(a);
      stop_entity(self, key, h);
    },
    [=](placement_atom, placement& p) -> caf::result<int64_t> {
      auto& st = self->state;
      if (p.map.version() < st.map.version())
        return st.map.version();
      apply(self, p);
      update_served(self);
      auto rp = self->make_response_promise<int64_t>();
      st.pending_release.emplace_back(rp, st.map.version());
      finish_releases(self);
      return rp;
    },
    [=](barrier_atom, int64_t v) {
      auto& st = self->state;
      if (v > st.barrier) {
        st.barrier = v;
        update_served(self);
      }
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
      for (auto& [key, h] : st.active)
        stop_entity(self, key, h);
      st.active.clear();
      maybe_finish_drain(self);
    },
  };
}

} // namespace

caf::actor spawn_shard_region(caf::actor_system& sys, std::string kind,
                              entity_factory factory, shard_map map,
                              std::string self, bool clustered,
                              lease_clock lease,
                              std::shared_ptr<local_entities> local) {
  return sys.spawn(region, std::move(kind), std::move(factory),
                   std::move(map), std::move(self), clustered,
                   std::move(lease), std::move(local));
}

} // namespace troupe::runtime
