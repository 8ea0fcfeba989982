#include "runtime/cluster.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/errc.hpp"
#include "runtime/logger.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node.hpp"
#include "runtime/shard_region.hpp"
#include "storage/errc.hpp"
#include "storage/membership.hpp"

namespace troupe::runtime {

namespace {

using namespace std::chrono;

using refresh_atom = caf::atom_constant<caf::atom("refresh")>;
using set_atom = caf::atom_constant<caf::atom("set")>;
using suspect_atom = caf::atom_constant<caf::atom("suspect")>;

struct peer {
  std::string address;
  caf::actor endpoint;
  std::vector<caf::actor> regions;
  /// The peer's membership actor (told to refresh at once on changes).
  caf::actor membership;
};

struct membership_state {
  std::string name = "membership";
  node* owner = nullptr;
  config::cluster_config cfg;
  std::string id;
  std::string http_address;
  int64_t incarnation = 0;
  std::unique_ptr<storage::connection> conn;
  std::vector<caf::actor> regions;
  std::map<std::string, peer> peers;
  std::set<std::string> connecting_failed;
  std::set<std::string> connecting;
  caf::actor connector;
  steady_clock::time_point last_ok = steady_clock::now();
  /// This node's lease: renewed after each heartbeat written, read by the
  /// regions on every request.
  lease_clock lease;
  /// How long a heartbeat keeps this node serving (cluster.fence_ms).
  milliseconds fence{1000};
  /// Peers whose connection dropped, since when: declared dead as soon as
  /// their last heartbeat is older than fence + heartbeat/2 (by then they
  /// stopped serving on their own), long before their lease expires.
  std::map<std::string, steady_clock::time_point> suspects;
  bool rapid_armed = false;
  /// Set once this node wrote `left`: it does nothing more (a late refresh
  /// must not register it again).
  bool left = false;
  bool fenced = false;
  bool registered = false;
  /// Newest map pushed to the regions and the version they acknowledged.
  std::optional<storage::map_row> pushed;
  bool peers_changed = false;
  int64_t acked = 0;
  int64_t reported = 0;
  int64_t barrier = 0;
  int64_t actors = 0;
  std::string state = "alive";
  std::optional<caf::response_promise> leaving;
  steady_clock::time_point leave_deadline;
  gauge* members_gauge = nullptr;
  gauge* map_version = nullptr;
  counter* maps_published = nullptr;
  gauge* fenced_gauge = nullptr;
};

using membership_actor = caf::stateful_actor<membership_state>;

void log_err(const char* what, const caf::error& err) {
  log().warn("membership: {}: {}", what, config::describe(err));
}

/// Pushes the newest map, the peers and the fence to every region; records
/// the acknowledged version when all of them answered.
void push(membership_actor* self) {
  auto& st = self->state;
  if (!st.pushed)
    return;
  auto version = st.pushed->version;
  st.owner->set_current_map(
    std::make_shared<const shard_map>(st.pushed->owners, version));
  auto left = std::make_shared<size_t>(st.regions.size());
  for (size_t i = 0; i < st.regions.size(); ++i) {
    placement p;
    p.map = shard_map{st.pushed->owners, version};
    p.fenced = st.fenced;
    p.fences = st.lease->fences();
    for (auto& [pid, pr] : st.peers)
      if (i < pr.regions.size())
        p.peers.emplace(pid, pr.regions[i]);
    self->request(st.regions[i], seconds(60), placement_atom::value,
                  std::move(p))
      .then(
        [=](int64_t v) {
          if (--*left == 0 && v >= version) {
            self->state.acked = std::max(self->state.acked, version);
            // Tell the database and the peers now, not at the next
            // heartbeat: the barrier (and a moved shard) waits for it.
            self->send(self, refresh_atom::value);
          }
        },
        [=](caf::error& err) { log_err("placement not acknowledged", err); });
  }
  st.peers_changed = false;
}

/// Asks every peer's membership to look at the database now (a new map,
/// an applied version): changes spread in milliseconds, not heartbeats.
void refresh_peers(membership_actor* self) {
  for (auto& [id, p] : self->state.peers)
    if (p.membership)
      self->send(p.membership, refresh_atom::value);
}

void set_fenced(membership_actor* self, bool fenced) {
  auto& st = self->state;
  if (st.fenced == fenced)
    return;
  st.fenced = fenced;
  st.fenced_gauge->set(fenced ? 1 : 0);
  // Before the regions hear of it: the edge stops sending past them now.
  if (fenced)
    st.lease->fence();
  if (fenced)
    log().error("membership: lease not renewed in time, serving no shard "
                "until it is");
  else
    log().info("membership: lease renewed, serving again");
  push(self);
}

bool register_self(membership_actor* self) {
  auto& st = self->state;
  auto row = storage::register_member(*st.conn, st.id, st.http_address,
                                      st.cfg.listen);
  if (!row) {
    log_err("cannot register", row.error());
    return false;
  }
  st.incarnation = row->incarnation;
  st.registered = true;
  st.acked = st.reported = 0;
  st.last_ok = steady_clock::now();
  log().info("membership: registered id={} incarnation={} address={}", st.id,
             st.incarnation, st.cfg.listen);
  return true;
}

void connect_peers(membership_actor* self,
                   const std::vector<storage::member_row>& live) {
  auto& st = self->state;
  std::set<std::string> wanted;
  for (auto& m : live)
    if (m.id != st.id && m.state != "left" && m.state != "dead")
      wanted.insert(m.id);
  // Forget peers that left or died.
  for (auto it = st.peers.begin(); it != st.peers.end();) {
    if (!wanted.count(it->first)) {
      log().info("membership: peer {} gone", it->first);
      it = st.peers.erase(it);
      st.peers_changed = true;
    } else {
      ++it;
    }
  }
  for (auto& m : live) {
    if (!wanted.count(m.id) || st.connecting.count(m.id))
      continue;
    auto known = st.peers.find(m.id);
    if (known != st.peers.end() && known->second.address == m.cluster_address)
      continue;
    std::string host;
    uint16_t port = 0;
    if (!config::split_host_port(m.cluster_address, host, port))
      continue;
    // The connector blocks in remote_actor, never the membership actor, so
    // a frozen peer cannot delay our own heartbeat.
    auto pid = m.id;
    auto addr = m.cluster_address;
    st.connecting.insert(pid);
    auto on_fail = [=](caf::error& err) {
      auto& st = self->state;
      st.connecting.erase(pid);
      if (st.connecting_failed.insert(pid).second)
        log().warn("membership: cannot reach peer {} at {}: {}", pid, addr,
                   self->system().render(err));
    };
    self->request(st.connector, seconds(30), get_atom::value, host, port)
      .then(
        [=](caf::actor& ep) {
          self->monitor(ep);
          self->request(ep, seconds(5), get_atom::value)
            .then(
              [=](std::vector<caf::actor>& handles) {
                auto& st = self->state;
                st.connecting.erase(pid);
                st.connecting_failed.erase(pid);
                st.suspects.erase(pid);
                // The endpoint answers its regions, then its membership.
                caf::actor m;
                if (!handles.empty()) {
                  m = handles.back();
                  handles.pop_back();
                }
                st.peers[pid] = peer{addr, ep, std::move(handles), m};
                st.peers_changed = true;
                log().info("membership: connected to peer {} at {}", pid,
                           addr);
                push(self);
              },
              on_fail);
        },
        on_fail);
  }
}

/// Connects to peers' published endpoints (blocking CAF calls, bounded by
/// the middleman's heartbeat and connection timeout).
caf::behavior connector(caf::event_based_actor* self) {
  return {
    [=](get_atom, const std::string& host,
        uint16_t port) -> caf::result<caf::actor> {
      auto ep = self->system().middleman().remote_actor(host, port);
      if (!ep)
        return ep.error();
      return *ep;
    },
  };
}

void update_view(membership_actor* self,
                 const std::vector<storage::member_row>& members,
                 const std::string& coordinator, int64_t in_motion) {
  auto& st = self->state;
  cluster_view v;
  v.coordinator = coordinator;
  v.fenced = st.fenced;
  v.joined = st.registered && !st.fenced && st.acked > 0;
  v.shards_in_motion = in_motion;
  v.map_version = st.pushed ? st.pushed->version : 0;
  for (auto& m : members) {
    member_view mv{m.id,           m.http_address, m.cluster_address,
                   m.state,        0,              m.actors,
                   m.started_ms,   m.heartbeat_ms, m.applied_version};
    if (st.pushed)
      mv.shards = std::count(st.pushed->owners.begin(),
                             st.pushed->owners.end(), m.id);
    v.members.push_back(std::move(mv));
  }
  st.owner->set_cluster_view(std::move(v));
}

void tick(membership_actor* self) {
  auto& st = self->state;
  if (st.left)
    return;
  auto now = steady_clock::now();
  auto lease = milliseconds(st.cfg.lease_ms);
  // -- lease -------------------------------------------------------------------
  if (!st.registered && !register_self(self))
    return;
  auto sent = steady_clock::now();
  auto hb = storage::heartbeat_member(*st.conn, st.id, st.incarnation,
                                      st.actors);
  if (!hb) {
    if (now - st.last_ok > st.fence)
      set_fenced(self, true);
    log_err("heartbeat failed", hb.error());
    return;
  }
  if (!*hb) {
    log().warn("membership: this node was declared dead; registering again");
    set_fenced(self, true);
    st.registered = false;
    if (!register_self(self))
      return;
  } else {
    st.state = **hb;
  }
  st.last_ok = now;
  // The heartbeat is stored: serve for `fence` from when it was sent.
  st.lease->renew_until(sent + st.fence);
  if (st.fenced && st.registered && *hb)
    set_fenced(self, false);
  // -- members -----------------------------------------------------------------
  auto db_now = storage::db_now_ms(*st.conn);
  auto members = storage::list_members(*st.conn);
  if (!db_now || !members)
    return;
  // A suspect (its connection dropped) whose heartbeat is older than its
  // own fence plus a margin has stopped serving: it no longer counts.
  auto stale_ms = st.fence.count() + st.cfg.heartbeat_ms / 2;
  auto gone = [&](const storage::member_row& m) {
    return st.suspects.count(m.id) > 0
           && m.heartbeat_ms < *db_now - stale_ms;
  };
  std::vector<storage::member_row> live;
  for (auto& m : *members) {
    if (m.state != "alive" && m.state != "draining" && m.state != "drained")
      st.suspects.erase(m.id);
    else if (m.heartbeat_ms >= *db_now - st.cfg.lease_ms && !gone(m))
      live.push_back(m);
  }
  st.members_gauge->set(static_cast<int64_t>(live.size()));
  auto coordinator = live.empty() ? std::string{} : live.front().id;
  // -- coordination ------------------------------------------------------------
  if (coordinator == st.id) {
    if (auto dead = storage::expire_members(*st.conn, st.cfg.lease_ms);
        dead && !dead->empty())
      for (auto& d : *dead)
        log().warn("membership: member {} missed its lease, marked dead", d);
    for (auto& m : *members) {
      if (!gone(m))
        continue;
      if (auto d = storage::declare_dead(*st.conn, m.id, stale_ms); d && *d) {
        log().warn("membership: member {} lost its connection and stopped "
                   "heartbeating, marked dead",
                   m.id);
        st.suspects.erase(m.id);
      }
    }
    std::vector<std::string> desired;
    for (auto& m : live)
      if (m.state == "alive")
        desired.push_back(m.id);
    std::sort(desired.begin(), desired.end());
    auto latest = storage::latest_map(*st.conn);
    if (latest && !desired.empty()) {
      std::optional<shard_map> next;
      if (!*latest) {
        next = shard_map{shard_map{st.cfg.shards, desired.front()}
                           .rebalance(desired)
                           .owners(),
                         1};
      } else {
        std::set<std::string> owners((*latest)->owners.begin(),
                                     (*latest)->owners.end());
        if (owners != std::set<std::string>(desired.begin(), desired.end()))
          next = shard_map{(*latest)->owners, (*latest)->version}.rebalance(
            desired);
      }
      if (next) {
        storage::map_row row{next->version(), next->owners(), 0, st.id};
        if (auto err = storage::insert_map(*st.conn, row)) {
          if (err != storage::errc::conflict)
            log_err("cannot publish shard map", err);
        } else {
          st.maps_published->inc();
          log().info("membership: published shard map version={} owners={}",
                     row.version, desired.size());
          refresh_peers(self);
        }
      }
    }
  }
  // -- placement ---------------------------------------------------------------
  auto latest = storage::latest_map(*st.conn);
  if (latest && *latest
      && (!st.pushed || (*latest)->version > st.pushed->version)) {
    st.pushed = **latest;
    st.map_version->set(st.pushed->version);
    push(self);
  }
  connect_peers(self, live);
  if (st.peers_changed)
    push(self);
  if (st.acked > st.reported) {
    if (!storage::set_applied_version(*st.conn, st.id, st.incarnation,
                                      st.acked)) {
      st.reported = st.acked;
      refresh_peers(self);
    }
  }
  // Barrier: every live member applied this version.
  int64_t barrier = std::numeric_limits<int64_t>::max();
  for (auto& m : live)
    barrier = std::min(barrier, m.id == st.id ? st.acked : m.applied_version);
  if (!live.empty() && barrier > st.barrier) {
    st.barrier = barrier;
    for (auto& r : st.regions)
      self->send(r, barrier_atom::value, barrier);
  }
  int64_t in_motion = 0;
  if (st.pushed && st.barrier < st.pushed->version)
    in_motion = 1;
  // -- draining ------------------------------------------------------------------
  if (st.state == "draining" && st.pushed
      && std::count(st.pushed->owners.begin(), st.pushed->owners.end(), st.id)
           == 0
      && st.acked >= st.pushed->version) {
    if (storage::set_member_state(*st.conn, st.id, "drained")) {
      st.state = "drained";
      log().info("membership: drained (no shards left)");
    }
  }
  // With no other alive member there is no one to hand shards to (the whole
  // cluster is stopping): leave at once instead of waiting for a deadline.
  bool others_alive = std::any_of(live.begin(), live.end(), [&](auto& m) {
    return m.id != st.id && m.state == "alive";
  });
  if (st.leaving
      && (st.state == "drained" || !others_alive || now > st.leave_deadline)) {
    (void) storage::set_member_state(*st.conn, st.id, "left");
    st.left = true;
    log().info("membership: left the cluster ({})", st.state);
    st.leaving->deliver(ok_atom::value);
    st.leaving.reset();
  }
  update_view(self, *members, coordinator, in_motion);
  // While a suspect may be declared dead, look every 100 ms.
  if (!st.suspects.empty() && !st.rapid_armed) {
    st.rapid_armed = true;
    self->delayed_send(self, milliseconds(100), suspect_atom::value);
  }
  // Actor count for the view (asked now, reported with the next heartbeat).
  auto total = std::make_shared<int64_t>(0);
  auto left = std::make_shared<size_t>(st.regions.size());
  for (auto& r : st.regions)
    self->request(r, seconds(1), count_atom::value)
      .then(
        [=](int64_t n) {
          *total += n;
          if (--*left == 0)
            self->state.actors = *total;
        },
        [](caf::error&) {});
}

caf::behavior membership(membership_actor* self, node* n,
                         std::vector<caf::actor> regions) {
  auto& st = self->state;
  st.owner = n;
  st.cfg = n->cfg().cluster;
  st.id = n->id();
  st.http_address = n->cfg().http.listen;
  st.regions = std::move(regions);
  st.conn = std::make_unique<storage::connection>(n->database_url(), 5);
  st.lease = n->lease();
  st.fence = milliseconds(st.cfg.fence_ms > 0 ? st.cfg.fence_ms
                                              : 2 * st.cfg.heartbeat_ms);
  st.connector = self->spawn<caf::detached + caf::linked>(connector);
  auto& reg = metrics();
  st.members_gauge = &reg.get_gauge("troupe_cluster_members",
                                    "Live cluster members");
  st.map_version = &reg.get_gauge("troupe_shard_map_version",
                                  "Newest shard-map version applied");
  st.maps_published = &reg.get_counter("troupe_shard_maps_published_total",
                                       "Shard-map versions this node wrote "
                                       "as coordinator");
  st.fenced_gauge = &reg.get_gauge("troupe_cluster_fenced",
                                   "1 while this node serves no shard "
                                   "(lease not renewed)");
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    for (auto it = st.peers.begin(); it != st.peers.end(); ++it) {
      if (it->second.endpoint.address() == dm.source) {
        log().warn("membership: lost connection to peer {}; suspect",
                   it->first);
        st.suspects[it->first] = steady_clock::now();
        st.peers.erase(it);
        push(self);
        self->send(self, refresh_atom::value);
        return;
      }
    }
  });
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      tick(self);
      self->delayed_send(self, milliseconds(self->state.cfg.heartbeat_ms),
                         tick_atom::value);
    },
    [=](refresh_atom) { tick(self); },
    [=](suspect_atom) {
      self->state.rapid_armed = false;
      tick(self);
    },
    [=](drain_atom, const std::string& id) -> caf::result<std::string> {
      auto& st = self->state;
      auto members = storage::list_members(*st.conn);
      if (!members)
        return members.error();
      auto m = std::find_if(members->begin(), members->end(),
                            [&](auto& x) { return x.id == id; });
      if (m == members->end())
        return make_runtime_error(errc::moved, "no such member " + id);
      if (m->state != "alive")
        return m->state;
      if (auto r = storage::set_member_state(*st.conn, id, "draining"); !r)
        return r.error();
      log().info("membership: member {} set to draining", id);
      return std::string{"draining"};
    },
    [=](stop_atom) -> caf::result<ok_atom> {
      auto& st = self->state;
      if (st.state == "alive")
        (void) storage::set_member_state(*st.conn, st.id, "draining");
      st.state = st.state == "drained" ? st.state : "draining";
      st.leaving = self->make_response_promise();
      st.leave_deadline = steady_clock::now() + seconds(30);
      log().info("membership: draining before leaving");
      return caf::delegated<ok_atom>{};
    },
  };
}

struct endpoint_state {
  std::string name = "cluster_endpoint";
  caf::actor membership;
};

/// What a peer learns when it connects: this node's regions, then its
/// membership actor.
caf::behavior endpoint(caf::stateful_actor<endpoint_state>* self,
                       std::vector<caf::actor> regions) {
  return {
    [=](get_atom) {
      auto out = regions;
      out.push_back(self->state.membership);
      return out;
    },
    [=](set_atom, caf::actor& m) { self->state.membership = std::move(m); },
  };
}

} // namespace

void install_cluster(node& n,
                     std::function<std::vector<caf::actor>()> get_regions) {
  auto handles = std::make_shared<std::pair<caf::actor, caf::actor>>();
  n.add_service(
    "cluster",
    [handles, get_regions](node& n) -> caf::error {
      auto& sys = n.system();
      auto regions = get_regions();
      handles->second = sys.spawn(endpoint, regions);
      std::string host;
      uint16_t port = 0;
      config::split_host_port(n.cfg().cluster.listen, host, port);
      auto bound = sys.middleman().publish(handles->second, port, host.c_str(),
                                           true);
      if (!bound) {
        // Drop the endpoint, or the actor system would wait for it forever.
        caf::anon_send_exit(handles->second, caf::exit_reason::user_shutdown);
        handles->second = nullptr;
        return make_runtime_error(errc::shutting_down,
                                  "cannot publish the cluster endpoint on "
                                    + n.cfg().cluster.listen + ": "
                                    + sys.render(bound.error()));
      }
      log().info("cluster endpoint published on {}:{}", host, *bound);
      handles->first = sys.spawn<caf::detached>(membership, &n, regions);
      caf::anon_send(handles->second, set_atom::value, handles->first);
      n.set_membership(handles->first);
      return caf::none;
    },
    [handles](node& n) {
      auto& sys = n.system();
      {
        // Hand our shards to the others before going (bounded).
        caf::scoped_actor self{sys};
        self->request(handles->first, std::chrono::seconds(40),
                      stop_atom::value)
          .receive([](ok_atom) {},
                   [](caf::error& err) { log_err("leave failed", err); });
      }
      sys.middleman().unpublish(handles->second, 0);
      caf::anon_send_exit(handles->first, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(handles->second, caf::exit_reason::user_shutdown);
      // Release the handles: a detached actor's thread is only joined once
      // nothing refers to it (~actor_system waits for it).
      handles->first = nullptr;
      handles->second = nullptr;
    });
}

} // namespace troupe::runtime
