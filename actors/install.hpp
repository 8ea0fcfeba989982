#pragma once

#include <memory>

#include <caf/actor.hpp>

#include "actors/admin.hpp"
#include "actors/alerts.hpp"
#include "actors/device.hpp"
#include "actors/fleet.hpp"
#include "actors/session.hpp"
#include "actors/user.hpp"
#include "runtime/shard_region.hpp"

namespace troupe::runtime {
class node;
} // namespace troupe::runtime

namespace troupe::actors {

/// Where the edge finds a node's actors: the shard regions of the virtual
/// actors (tagged with their entities' typed interfaces) and the typed
/// handles of the stateless ones. Filled when the actors service starts,
/// read-only afterwards.
struct handles {
  runtime::region_of<device_actor> devices;
  runtime::region_of<session_actor> sessions;
  runtime::region_of<user_actor> users;
  fleet_actor fleet;
  admin_actor admin;
  alerts_actor alerts;
};

/// Adds the actors service to the node: the first admin, the supervised
/// importers, the device loader, the device, session and user shard
/// regions, the fleet, admin and alerts actors, and the analysis; with a
/// cluster, membership places the regions. Returns the handles, filled
/// when the service starts (before the edge, which is installed after it).
/// On stop it drains the regions (long-polls answered, actors
/// passivated), then stops the analysis, then the importers after their
/// final flush.
std::shared_ptr<const handles> install(runtime::node& n);

} // namespace troupe::actors
