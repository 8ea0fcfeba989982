#include "actors/fleet.hpp"

#include <algorithm>
#include <cstdio>
#include <memory>

#include <caf/all.hpp>

#include "actors/errc.hpp"
#include "actors/logger.hpp"
#include "actors/roles.hpp"
#include "actors/shards.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/db_pool.hpp"
#include "storage/crypto.hpp"
#include "storage/errc.hpp"
#include "storage/queries.hpp"

namespace troupe::actors {

namespace {

using runtime::db_call;
using runtime::db_reply;
using runtime::route_atom;

struct fleet_state {
  std::string name = "fleet";
  context_ptr ctx;
};

using fleet_ptr = fleet_actor::stateful_pointer<fleet_state>;


} // namespace

fleet_actor::behavior_type fleet(fleet_ptr self, context_ptr ctx) {
  self->state.ctx = ctx;
  return {
    [=](list_devices& req) -> caf::result<device_page> {
      auto& st = self->state;
      storage::device_filter f;
      f.tenant = is_admin(req.who) ? "" : req.who.tenant;
      if (!is_admin(req.who) && f.tenant.empty())
        return device_page{};
      f.q = req.q;
      if (req.online >= 0)
        f.online = req.online == 1;
      f.online_since_ms = now_ms() - st.ctx->actors.online_window_s * 1000;
      f.after = req.after;
      f.limit = static_cast<size_t>(req.limit);
      auto window = st.ctx->actors.online_window_s * 1000;
      auto limit = req.limit;
      // Straight from PostgreSQL (two queries a page on each data shard,
      // merged by id): a list wakes no device actor. Telemetry commits,
      // logins and polls keep last_seen.
      auto rp = self->make_response_promise<device_page>();
      on_every_shard<std::vector<storage::device_summary>>(
        self, *st.ctx, shard_pool::reads,
        [f](size_t shard, storage::connection& c) {
          return storage::list_device_summaries(c, f,
                                                static_cast<int32_t>(shard));
        },
        [rp, window, limit](
          std::vector<caf::expected<std::vector<storage::device_summary>>>
            pages) mutable {
          // A page that leaves out a shard's devices would be wrong.
          if (auto err = first_failure(pages)) {
            rp.deliver(std::move(*err));
            return;
          }
          std::vector<storage::device_summary> rows;
          for (auto& p : pages)
            for (auto& d : *p)
              rows.push_back(std::move(d));
          std::sort(rows.begin(), rows.end(),
                    [](auto& a, auto& b) { return a.id < b.id; });
          if (rows.size() > static_cast<size_t>(limit))
            rows.resize(static_cast<size_t>(limit));
          device_page page;
          auto now = now_ms();
          for (auto& d : rows) {
            device_view v;
            v.id = d.id;
            v.name = d.name;
            v.tenant = d.tenant;
            v.last_seen_ms = d.last_seen_ms.value_or(-1);
            v.online = d.last_seen_ms && *d.last_seen_ms >= now - window;
            for (auto& l : d.latest) {
              v.latest[l.metric] = latest_value{l.value, l.ts_ms};
              v.metrics.push_back(l.metric);
            }
            page.items.push_back(std::move(v));
          }
          if (rows.size() == static_cast<size_t>(limit) && !rows.empty())
            page.next = rows.back().id;
          rp.deliver(std::move(page));
        });
      return rp;
    },
  };
}

fleet_actor spawn_fleet(caf::actor_system& sys, const context_ptr& ctx) {
  return sys.spawn(fleet, ctx);
}

} // namespace troupe::actors
