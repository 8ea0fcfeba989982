#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/typed_actor.hpp>

#include "actors/context.hpp"
#include "actors/types.hpp"
#include "runtime/atoms.hpp"

namespace troupe::actors {

// -- messages -------------------------------------------------------------------

struct list_devices {
  caller who;
  std::string q;
  int8_t online = -1; // -1: any, 0: offline, 1: online
  std::string after;
  int64_t limit = 100;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_devices& x) {
  return f(caf::meta::type_name("troupe.list_devices"), x.who, x.q, x.online,
           x.after, x.limit);
}

struct device_page {
  std::vector<device_view> items;
  std::string next; // empty: no more
  /// Some data shard did not answer (its devices are marked).
  bool partial = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_page& x) {
  return f(caf::meta::type_name("troupe.device_page"), x.items, x.next,
           x.partial);
}

// -- interface ------------------------------------------------------------------

/// The fleet actor's interface.
using fleet_actor
  = caf::typed_actor<caf::replies_to<list_devices>::with<device_page>>;

/// Spawns the fleet actor: lists the devices a caller may see (their
/// tenant; admins: all), with search, online filter and paging, straight
/// from PostgreSQL: a page and its latest values in two queries, waking no
/// device actor. Stateless; any node's serves any request.
/// Owner: actors::install.
fleet_actor spawn_fleet(caf::actor_system& sys, const context_ptr& ctx);

} // namespace troupe::actors
