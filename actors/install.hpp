#pragma once

namespace troupe::runtime {
class node;
} // namespace troupe::runtime

namespace troupe::actors {

/// Adds the actors service to the node: the first admin, importers, the
/// device and session shard regions, and the directory, published as the
/// node's actors "devices", "sessions" and "directory". On stop it drains
/// the regions (long-polls answered, actors passivated), then stops the
/// importers after their final flush.
void install(runtime::node& n);

} // namespace troupe::actors
