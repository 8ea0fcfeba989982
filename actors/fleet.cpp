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

/// A shard's device rows, each marked when it comes from the catalog
/// because its data shard did not answer.
using summaries = std::vector<std::pair<storage::device_summary, bool>>;

/// The merged page: the first `limit` rows by id (byte order, as each
/// shard's query sorts).
device_page make_page(summaries rows, int64_t window, int64_t limit,
                      bool partial) {
  std::sort(rows.begin(), rows.end(),
            [](auto& a, auto& b) { return a.first.id < b.first.id; });
  if (rows.size() > static_cast<size_t>(limit))
    rows.resize(static_cast<size_t>(limit));
  device_page page;
  page.partial = partial;
  auto now = now_ms();
  for (auto& [d, unavailable] : rows) {
    device_view v;
    v.id = d.id;
    v.name = d.name;
    v.tenant = d.tenant;
    v.last_seen_ms = d.last_seen_ms.value_or(-1);
    v.online = d.last_seen_ms && *d.last_seen_ms >= now - window;
    v.data_unavailable = unavailable;
    v.silence_s = d.silence_s.value_or(0);
    for (auto& l : d.latest) {
      v.latest[l.metric] = latest_value{l.value, l.ts_ms};
      v.metrics.push_back(l.metric);
    }
    page.items.push_back(std::move(v));
  }
  if (rows.size() == static_cast<size_t>(limit) && !rows.empty())
    page.next = rows.back().first.id;
  return page;
}


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
        [self, rp, f, window, limit](
          std::vector<caf::expected<std::vector<storage::device_summary>>>
            pages) mutable {
          // The catalog is data shard 0: without it there is no list.
          if (!pages[0]) {
            rp.deliver(std::move(pages[0].error()));
            return;
          }
          summaries rows;
          std::vector<int32_t> down;
          for (size_t s = 0; s < pages.size(); ++s) {
            if (!pages[s]) {
              log().warn("device list: data shard {} did not answer ({}); "
                         "its devices come from the catalog",
                         s, config::describe(pages[s].error()));
              down.push_back(static_cast<int32_t>(s));
              continue;
            }
            for (auto& d : *pages[s])
              rows.emplace_back(std::move(d), false);
          }
          if (down.empty()) {
            rp.deliver(make_page(std::move(rows), window, limit, false));
            return;
          }
          // A down shard's devices still belong in the page: the catalog
          // has their ids, names and tenants (not their last_seen, kept on
          // the shard: null or old there), marked as such.
          partial_lists("devices").inc();
          db_call<std::vector<storage::device_summary>>(
            self, self->state.ctx->data[0].reads,
            [f, down](storage::connection& c)
              -> caf::expected<std::vector<storage::device_summary>> {
              std::vector<storage::device_summary> out;
              for (auto s : down) {
                auto r = storage::list_device_summaries(c, f, s);
                if (!r)
                  return r.error();
                for (auto& d : *r) {
                  d.latest.clear();
                  out.push_back(std::move(d));
                }
              }
              return out;
            },
            [rp, rows = std::move(rows), window, limit](
              caf::expected<std::vector<storage::device_summary>> r) mutable {
              if (!r) {
                rp.deliver(std::move(r.error()));
                return;
              }
              for (auto& d : *r)
                rows.emplace_back(std::move(d), true);
              rp.deliver(make_page(std::move(rows), window, limit, true));
            });
        });
      return rp;
    },
  };
}

fleet_actor spawn_fleet(caf::actor_system& sys, const context_ptr& ctx) {
  return sys.spawn(fleet, ctx);
}

} // namespace troupe::actors
