#pragma once

#include <caf/atom.hpp>

/// Atoms of the runtime's messages (CAF 0.17: at most 10 characters).
namespace troupe::runtime {

using route_atom = caf::atom_constant<caf::atom("route")>;
using passivate_atom = caf::atom_constant<caf::atom("passivate")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using ok_atom = caf::atom_constant<caf::atom("ok")>;
using count_atom = caf::atom_constant<caf::atom("count")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using broadcast_atom = caf::atom_constant<caf::atom("broadcast")>;
using forward_atom = caf::atom_constant<caf::atom("forward")>;
using placement_atom = caf::atom_constant<caf::atom("placement")>;
using barrier_atom = caf::atom_constant<caf::atom("barrier")>;
using get_atom = caf::atom_constant<caf::atom("get")>;

} // namespace troupe::runtime
