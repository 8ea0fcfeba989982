#pragma once

#include <caf/fwd.hpp>

namespace troupe::actors {

/// Registers every message type of messages.hpp under its stable name
/// ("troupe.telemetry", ...). Must run on every node before its actor system
/// starts, so messages can cross nodes (CAF 0.17 drops unregistered types
/// at runtime with only a log line).
void register_types(caf::actor_system_config& cfg);

} // namespace troupe::actors
