// Operations: health, readiness, Prometheus metrics, the cluster view and
// drain.

#include "http/routes.hpp"

#include <caf/all.hpp>

#include "actors/roles.hpp"
#include "http/call.hpp"
#include "http/openapi.hpp"
#include "http/probe.hpp"
#include "http/render.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node.hpp"
#include "storage/pg.hpp"

namespace troupe::http {

namespace {

using json = nlohmann::json;

/// Runs `k` when the caller is an admin; else 403.
template <class F>
void as_admin(const call_ptr& c, F k) {
  c->user([c, k](const actors::caller& who) {
    if (!actors::is_admin(who))
      return c->fail(api_error{403, "forbidden", "admin role required"});
    k(who);
  });
}

void healthz(const call_ptr& c) {
  c->reply(200, {{"status", "ok"}});
}

void readyz(const call_ptr& c) {
  std::string why;
  auto& node = c->env().node;
  if (node.ready(&why))
    return c->reply(200, {{"status", "ready"}, {"node", node.id()}});
  c->add_header("Retry-After", "1");
  c->reply(503, {{"status", "not_ready"}, {"reason", why}});
}

void openapi(const call_ptr& c) {
  c->add_header("Cache-Control", "no-cache");
  c->reply_text(200, "application/json", std::string{openapi_document()});
}

void prometheus(const call_ptr& c) {
  auto& env = c->env();
  env.probe->connections.set(static_cast<int64_t>(env.open_connections()));
  c->reply_text(200, "text/plain; version=0.0.4; charset=utf-8",
                runtime::metrics().render());
}

/// The database tier as this node sees it: the primary with its standbys,
/// the read replicas with their lag and the reads they served, and the
/// data shards.
json database_view(edge_env& env) {
  auto& node = env.node;
  auto& st = node.cfg().storage;
  auto standbys = json::array();
  for (auto& s : node.standbys())
    standbys.push_back({{"name", s.name},
                        {"state", s.state},
                        {"sync_state", s.sync},
                        {"replay_lag_ms", s.lag_ms}});
  auto replicas = json::array();
  for (auto& r : node.replicas()) {
    json x = {{"name", r.name},
              {"shard", r.shard},
              {"address", r.address},
              {"up", r.up},
              {"serving", r.serving},
              {"lag_ms", r.lag_ms},
              {"behind_bytes", r.behind_bytes},
              {"reads", r.reads}};
    if (!r.why.empty())
      x["why"] = r.why;
    replicas.push_back(std::move(x));
  }
  auto shards = json::array();
  for (size_t i = 0; i < node.shard_urls().size(); ++i)
    shards.push_back({{"shard", i},
                      {"address", storage::url_address(node.shard_urls()[i])},
                      {"up", node.shard_up(i)}});
  return {{"primary",
           {{"role", st.database_url.empty() ? "embedded" : "primary"},
            {"address", storage::url_address(node.database_url())},
            {"up", node.database_up()},
            {"standby_policy", st.standby_policy},
            {"standbys", standbys}}},
          {"replicas", replicas},
          {"max_replica_lag_ms", st.max_replica_lag_ms},
          {"shards", shards}};
}

json single_node_view(edge_env& env, int64_t actors) {
  auto& node = env.node;
  json member = {{"id", node.id()},
                 {"address", env.cfg.listen},
                 {"http", env.cfg.listen},
                 {"state", node.stopping() ? "leaving" : "alive"},
                 {"shards", env.cluster.shards},
                 {"actors", actors},
                 {"since_ms", node.started_ms()}};
  return {{"members", json::array({member})},
          {"shard_map_version", 1},
          {"shards", env.cluster.shards},
          {"coordinator", node.id()},
          {"moving", json::array()},
          {"database", database_view(env)}};
}

void cluster(const call_ptr& c) {
  as_admin(c, [c](const actors::caller&) {
    auto& env = c->env();
    auto& node = env.node;
    if (!node.clustered()) {
      // Actors in memory: devices, then sessions.
      c->ask_dynamic<int64_t>(
        env.devices.handle, runtime::count_atom::value,
        [c](caf::expected<int64_t> devices) {
          c->ask_dynamic<int64_t>(
            c->env().sessions.handle, runtime::count_atom::value,
            [c, devices](caf::expected<int64_t> sessions) {
              c->reply(200, single_node_view(c->env(),
                                             (devices ? *devices : 0)
                                               + (sessions ? *sessions : 0)));
            });
        });
      return;
    }
    auto v = node.view();
    auto members = json::array();
    for (auto& m : v.members)
      members.push_back({{"id", m.id},
                         {"address", m.cluster_address},
                         {"http", m.http_address},
                         {"state", m.state},
                         {"shards", m.shards},
                         {"actors", m.actors},
                         {"since_ms", m.since_ms},
                         {"heartbeat_ms", m.heartbeat_ms},
                         {"applied_version", m.applied_version}});
    auto moving = json::array();
    if (v.shards_in_motion > 0)
      moving.push_back({{"version", v.map_version},
                        {"waiting_for", "members to apply the map"}});
    c->reply(200, {{"members", members},
                   {"shard_map_version", v.map_version},
                   {"shards", env.cluster.shards},
                   {"coordinator", v.coordinator},
                   {"node", node.id()},
                   {"fenced", v.fenced},
                   {"moving", moving},
                   {"database", database_view(env)}});
  });
}

void drain(const call_ptr& c) {
  as_admin(c, [c](const actors::caller&) {
    auto id = c->id_param();
    if (!id)
      return;
    auto& node = c->env().node;
    auto membership = node.membership();
    if (!node.clustered() || !membership) {
      if (*id != node.id())
        return c->fail(api_error{404, "not_found", "no such member: " + *id});
      return c->fail(api_error{409, "conflict",
                               "a single node has no one to hand its shards "
                               "to; stop it with SIGTERM"});
    }
    c->ask_dynamic<std::string>(
      membership, caf::make_message(runtime::drain_atom::value, *id),
      [c, id = *id](caf::expected<std::string> r) {
        if (!r) {
          if (r.error() == runtime::errc::moved)
            return c->fail(api_error{404, "not_found",
                                     "no such member: " + id});
          return c->fail(r.error());
        }
        c->reply(202, {{"id", id}, {"state", *r}});
      });
  });
}

} // namespace

void add_ops_routes(router& r) {
  r.add("GET", "/healthz", healthz);
  r.add("GET", "/readyz", readyz);
  r.add("GET", "/metrics", prometheus);
  r.add("GET", "/api/v1/openapi.json", openapi);
  r.add("GET", "/api/v1/cluster", cluster);
  r.add("POST", "/api/v1/cluster/nodes/{id}/drain", drain);
}

} // namespace troupe::http
