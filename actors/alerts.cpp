#include "actors/alerts.hpp"

#include <algorithm>
#include <cstdio>
#include <tuple>
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

struct alerts_state {
  std::string name = "alerts";
  context_ptr ctx;
};

using alerts_ptr = alerts_actor::stateful_pointer<alerts_state>;

/// Page positions "<ms>:<id>", opaque to the edge.
std::string position(int64_t ms, const std::string& id) {
  return std::to_string(ms) + ":" + id;
}

bool parse_position(const std::string& pos, int64_t& ms, std::string& id) {
  auto colon = pos.find(':');
  if (colon == std::string::npos || colon == 0)
    return false;
  char* end = nullptr;
  auto text = pos.substr(0, colon);
  ms = std::strtoll(text.c_str(), &end, 10);
  if (!end || *end != '\0')
    return false;
  id = pos.substr(colon + 1);
  return true;
}

rule to_rule(const storage::rule_row& r) {
  return {r.id,    r.tenant,   r.device_id,  r.metric,    r.op,
          r.value, r.for_s,    r.created_ms, r.created_by};
}

alert to_alert(const storage::alert_row& a) {
  alert x;
  x.id = a.id;
  x.tenant = a.tenant;
  x.device_id = a.device_id;
  x.kind = a.kind;
  x.rule_id = a.rule_id;
  x.metric = a.metric;
  x.message = a.message;
  x.state = a.state;
  x.opened_ms = a.opened_ms;
  x.closed_ms = a.closed_ms.value_or(-1);
  x.has_value = a.value.has_value();
  x.value = a.value.value_or(0);
  return x;
}


} // namespace

alerts_actor::behavior_type alerts(alerts_ptr self, context_ptr ctx) {
  self->state.ctx = ctx;
  return {
    // -- rules and alerts ------------------------------------------------------
    // Any role reads its tenant's rules and alerts (admins: all tenants);
    // operators and admins change them. Another tenant's rule or alert is
    // 404, as its devices are.
    [=](list_rules& req) -> caf::result<rule_page> {
      int64_t after_ms = -1;
      std::string after_id;
      if (!req.after.empty() && !parse_position(req.after, after_ms, after_id))
        return make_actor_error(errc::bad_request, "invalid cursor");
      if (!is_admin(req.who) && req.who.tenant.empty())
        return rule_page{};
      return db_reply<rule_page>(self, self->state.ctx->db, [req, after_ms, after_id](storage::connection& c)
                -> caf::expected<rule_page> {
          auto rows = storage::list_rules(c, tenant_scope(req.who), after_ms,
                                          after_id,
                                          static_cast<size_t>(req.limit));
          if (!rows)
            return rows.error();
          rule_page out;
          for (auto& r : *rows)
            out.items.push_back(to_rule(r));
          if (rows->size() == static_cast<size_t>(req.limit) && !rows->empty())
            out.next = position(rows->back().created_ms, rows->back().id);
          return out;
        });
    },
    [=](create_rule& req) -> caf::result<rule> {
      if (!may_operate(req.who))
        return forbidden(req.who, "manage rules");
      auto spec = req.spec;
      if (!is_admin(req.who)) {
        if (!spec.tenant.empty() && spec.tenant != req.who.tenant)
          return make_actor_error(errc::forbidden,
                                  "only admins may create rules for another "
                                  "tenant");
        spec.tenant = req.who.tenant;
      }
      if (spec.tenant.empty() && spec.device_id.empty())
        return make_actor_error(errc::bad_request,
                                "tenant is required (the caller has none)");
      spec.id = storage::crypto::random_token(16);
      spec.created_ms = now_ms();
      spec.created_by = req.who.username;
      return db_reply<rule>(self, self->state.ctx->db,
        [spec, who = req.who](storage::connection& c) mutable
          -> caf::expected<rule> {
          if (!spec.device_id.empty()) {
            auto t = storage::device_tenant(c, spec.device_id);
            if (!t)
              return t.error();
            // Unknown, or another tenant's: the same answer.
            if (!*t || !sees(who, **t)
                || (!spec.tenant.empty() && spec.tenant != **t))
              return make_actor_error(errc::not_found,
                                      "device " + spec.device_id
                                        + " not found");
            spec.tenant = **t;
          } else if (is_admin(who)) {
            auto exists = storage::tenant_exists(c, spec.tenant);
            if (!exists)
              return exists.error();
            if (!*exists)
              return make_actor_error(errc::bad_request,
                                      "tenant " + spec.tenant
                                        + " does not exist");
          }
          storage::rule_row row{spec.id,     spec.tenant, spec.device_id,
                                spec.metric, spec.op,     spec.value,
                                spec.for_s,  spec.created_ms,
                                spec.created_by};
          if (auto err = storage::insert_rule(c, row))
            return err;
          log().info("rule={} tenant={} device={} {} {} {} for_s={} by={}",
                     row.id, row.tenant, row.device_id, row.metric, row.op,
                     row.value, row.for_s, who.username);
          return spec;
        });
    },
    [=](delete_rule& req) -> caf::result<done> {
      return db_reply<done>(self, self->state.ctx->db, [req](storage::connection& c) -> caf::expected<done> {
          auto r = storage::find_rule(c, req.id);
          if (!r)
            return r.error();
          if (!*r || !sees(req.who, (*r)->tenant))
            return make_actor_error(errc::not_found,
                                    "rule " + req.id + " not found");
          if (!may_operate(req.who))
            return forbidden(req.who, "manage rules");
          auto gone = storage::delete_rule(c, req.id, now_ms());
          if (!gone)
            return gone.error();
          if (!*gone)
            return make_actor_error(errc::not_found,
                                    "rule " + req.id + " not found");
          log().info("rule={} deleted by={}", req.id, req.who.username);
          return done{};
        });
    },
    [=](list_alerts& req) -> caf::result<alert_page> {
      storage::alert_filter f;
      if (!req.after.empty()
          && !parse_position(req.after, f.before_ms, f.before_id))
        return make_actor_error(errc::bad_request, "invalid cursor");
      if (!is_admin(req.who) && req.who.tenant.empty())
        return alert_page{};
      f.tenant = tenant_scope(req.who);
      f.state = req.state;
      f.device_id = req.device_id;
      f.limit = static_cast<size_t>(req.limit);
      // Each data shard's page, merged newest first.
      auto rp = self->make_response_promise<alert_page>();
      on_every_shard<std::vector<storage::alert_row>>(
        self, *self->state.ctx, shard_pool::reads,
        [f](size_t, storage::connection& c) {
          return storage::list_alerts(c, f);
        },
        [rp, limit = static_cast<size_t>(req.limit)](
          std::vector<caf::expected<std::vector<storage::alert_row>>>
            pages) mutable {
          // A shard that does not answer leaves out its devices' alerts:
          // the page says so (partial), unless no shard answered.
          std::vector<storage::alert_row> rows;
          size_t down = 0;
          for (size_t s = 0; s < pages.size(); ++s) {
            if (!pages[s]) {
              log().warn("alert list: data shard {} did not answer ({}); "
                         "its alerts are left out",
                         s, config::describe(pages[s].error()));
              ++down;
              continue;
            }
            for (auto& a : *pages[s])
              rows.push_back(std::move(a));
          }
          if (down == pages.size()) {
            rp.deliver(std::move(pages[0].error()));
            return;
          }
          if (down > 0)
            partial_lists("alerts").inc();
          std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) {
            return std::tie(a.opened_ms, a.id) > std::tie(b.opened_ms, b.id);
          });
          if (rows.size() > limit)
            rows.resize(limit);
          alert_page out;
          out.partial = down > 0;
          for (auto& a : rows)
            out.items.push_back(to_alert(a));
          if (rows.size() == limit && !rows.empty())
            out.next = position(rows.back().opened_ms, rows.back().id);
          rp.deliver(std::move(out));
        });
      return rp;
    },
    [=](close_alert& req) -> caf::result<alert> {
      // The alert lives on its device's shard: each shard looks.
      auto rp = self->make_response_promise<alert>();
      on_every_shard<std::optional<alert>>(
        self, *self->state.ctx, shard_pool::db,
        [req](size_t, storage::connection& c)
          -> caf::expected<std::optional<alert>> {
          auto a = storage::find_alert(c, req.id);
          if (!a)
            return a.error();
          if (!*a || !sees(req.who, (*a)->tenant))
            return std::optional<alert>{};
          if (!may_operate(req.who))
            return forbidden(req.who, "close alerts");
          auto closed = storage::close_alert(c, req.id, now_ms());
          if (!closed)
            return closed.error();
          // Closed before, or by a pass meanwhile.
          if (!*closed)
            return make_actor_error(errc::conflict,
                                    "alert " + req.id + " is already closed");
          log().info("alert={} closed by={}", req.id, req.who.username);
          return std::optional<alert>{to_alert(**closed)};
        },
        [rp, id = req.id](
          std::vector<caf::expected<std::optional<alert>>> found) mutable {
          for (auto& f : found)
            if (f && *f) {
              rp.deliver(std::move(**f));
              return;
            }
          if (auto err = first_failure(found)) {
            rp.deliver(std::move(*err));
            return;
          }
          rp.deliver(make_actor_error(errc::not_found,
                                      "alert " + id + " not found"));
        });
      return rp;
    },
  };
}

alerts_actor spawn_alerts(caf::actor_system& sys, const context_ptr& ctx) {
  return sys.spawn(alerts, ctx);
}

} // namespace troupe::actors
