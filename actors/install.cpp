#include "actors/install.hpp"

#include <chrono>

#include <caf/all.hpp>

#include "actors/analysis.hpp"
#include "actors/context.hpp"
#include "actors/device.hpp"
#include "actors/device_loader.hpp"
#include "actors/admin.hpp"
#include "actors/alerts.hpp"
#include "actors/fleet.hpp"
#include "actors/importer.hpp"
#include "actors/logger.hpp"
#include "actors/session.hpp"
#include "actors/user.hpp"
#include "actors/type_ids.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/cluster.hpp"
#include "runtime/local_entities.hpp"
#include "runtime/logger.hpp"
#include "runtime/node.hpp"
#include "runtime/shard_region.hpp"

namespace troupe::actors {

spdlog::logger& log() {
  static auto instance = runtime::module_logger("troupe.actors");
  return *instance;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

namespace {

/// Waits until each actor has terminated (bounded).
void await_down(caf::actor_system& sys, const std::vector<caf::actor>& hs,
                std::chrono::seconds limit) {
  caf::scoped_actor self{sys};
  for (auto& h : hs)
    self->monitor(h);
  size_t left = hs.size();
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (left > 0 && std::chrono::steady_clock::now() < deadline) {
    self->receive([&](caf::down_msg&) { --left; },
                  caf::after(std::chrono::milliseconds(200)) >> [] {});
  }
  if (left > 0)
    log().warn("{} actors did not stop in time", left);
}

} // namespace

std::shared_ptr<const handles> install(runtime::node& n) {
  auto ctx = std::make_shared<context>();
  auto out = std::make_shared<handles>();
  auto analyses = std::make_shared<std::vector<caf::actor>>();
  n.on_configure(register_types);
  n.add_service(
    "actors",
    [ctx, out, analyses](runtime::node& n) -> caf::error {
      auto& cfg = n.cfg();
      if (auto err = bootstrap_admin(n.database_url(),
                                     cfg.bootstrap.admin_user,
                                     cfg.bootstrap.admin_password))
        return err;
      auto& sys = n.system();
      ctx->actors = cfg.actors;
      ctx->ingest = cfg.ingest;
      ctx->analysis = cfg.analysis;
      ctx->auth = cfg.auth;
      ctx->node_id = n.id();
      ctx->standby_policy = cfg.storage.standby_policy;
      ctx->shards = cfg.cluster.shards;
      ctx->secret_key = n.secret_key();
      ctx->db = n.db();
      ctx->reads = n.reads();
      // Each data shard has its own pool, read router (over its replicas)
      // and importers (shard 0 shares the catalog's pool and router).
      for (size_t s = 0; s < n.shard_urls().size(); ++s) {
        data_shard d;
        d.db = n.shard_db(s);
        d.reads = n.shard_reads(s);
        for (size_t i = 0; i < cfg.ingest.importers; ++i) {
          auto id = (s == 0 ? "" : "s" + std::to_string(s) + "-")
                    + std::to_string(i);
          d.importers.push_back(
            spawn_importer(sys, ctx, n.shard_urls()[s], cfg.storage.data_dir,
                           id, cfg.storage.spool_max_bytes));
        }
        ctx->data.push_back(std::move(d));
      }
      ctx->shard_up = [&n](size_t i) { return n.shard_up(i); };
      ctx->device_loader = spawn_device_loader(sys, ctx);
      // A single node serves every shard at once; a cluster node serves
      // nothing until membership hands it a placement.
      auto clustered = !cfg.cluster.listen.empty();
      auto map = clustered ? runtime::shard_map{}
                           : runtime::shard_map{cfg.cluster.shards, n.id()};
      auto lease = clustered ? n.lease() : nullptr;
      // A region per kind of virtual actor, and what it serves here for the
      // edge to send to directly.
      auto region = [&](const char* kind, auto spawn_entity, auto& handles) {
        handles.local = std::make_shared<runtime::local_entities>(lease);
        handles.handle = runtime::spawn_shard_region(
          sys, kind,
          [ctx, spawn_entity](caf::actor_system& sys, const caf::actor& owner,
                              const std::string& key) {
            return caf::actor_cast<caf::actor>(
              spawn_entity(sys, ctx, owner, key));
          },
          map, n.id(), clustered, lease, handles.local);
        return handles.handle;
      };
      ctx->devices = region("device", &spawn_device, out->devices);
      ctx->sessions = region("session", &spawn_session, out->sessions);
      ctx->users = region("user", &spawn_user, out->users);
      out->fleet = spawn_fleet(sys, ctx);
      out->admin = spawn_admin(sys, ctx);
      out->alerts = spawn_alerts(sys, ctx);
      // After the regions: the analysis reads what their actors stored.
      // Each node analyses the devices of the shards it owns.
      owned_shards_fn owned = [] { return std::nullopt; };
      if (clustered)
        owned = [&n]() -> std::optional<std::vector<int32_t>> {
          std::vector<int32_t> out;
          if (auto map = n.current_map())
            for (uint32_t s = 0; s < map->shards(); ++s)
              if (map->owner(s) == n.id())
                out.push_back(static_cast<int32_t>(s));
          return out;
        };
      // One analysis per data shard, each on its shard's database; those of
      // other shards copy the catalog's rules first.
      for (size_t s = 0; s < n.shard_urls().size(); ++s)
        analyses->push_back(spawn_analysis(
          sys, cfg.analysis, n.shard_urls()[s],
          cfg.storage.connect_timeout_s, owned,
          s == 0 ? std::string{} : n.database_url(), s));
      log().info("actors up importers={} shards={} data_shards={}",
                 cfg.ingest.importers, cfg.cluster.shards, ctx->data.size());
      return caf::none;
    },
    [ctx, out, analyses](runtime::node& n) {
      auto& sys = n.system();
      // Regions first: their actors answer waiters and passivate.
      std::vector<caf::actor> regions{ctx->devices, ctx->sessions,
                                      ctx->users};
      for (auto& r : regions)
        caf::anon_send(r, runtime::stop_atom::value);
      await_down(sys, regions, std::chrono::seconds(30));
      // The analysis before the importers: a pass may still be reading.
      for (auto& a : *analyses)
        caf::anon_send(a, runtime::stop_atom::value);
      await_down(sys, *analyses, std::chrono::seconds(30));
      analyses->clear();
      // Then the importers, after a final flush.
      std::vector<caf::actor> importers;
      for (auto& d : ctx->data)
        importers.insert(importers.end(), d.importers.begin(),
                         d.importers.end());
      for (auto& i : importers)
        caf::anon_send_exit(i, caf::exit_reason::user_shutdown);
      await_down(sys, importers, std::chrono::seconds(60));
      for (auto h : {caf::actor_cast<caf::actor>(out->fleet),
                     caf::actor_cast<caf::actor>(out->admin),
                     caf::actor_cast<caf::actor>(out->alerts)})
        caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(ctx->device_loader, caf::exit_reason::user_shutdown);
      ctx->device_loader = nullptr;
      ctx->devices = ctx->sessions = ctx->users = nullptr;
      // ctx->data stays: an actor that has not stopped yet may still read
      // it (its handles die with the actor system).
      ctx->db = nullptr;
      ctx->reads = nullptr;
    });
  // Membership and placement, only for a cluster node.
  if (n.clustered())
    runtime::install_cluster(n, [ctx] {
      return std::vector<caf::actor>{ctx->devices, ctx->sessions,
                                     ctx->users};
    });
  return out;
}

} // namespace troupe::actors
