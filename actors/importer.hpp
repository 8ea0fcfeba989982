#pragma once

#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>

#include "actors/context.hpp"
#include "storage/ingest.hpp"

namespace troupe::actors {

/// Points from one device request, handed to its importer. Local only.
struct import_request {
  storage::ingest_batch batch;
};

} // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::import_request)

namespace troupe::actors {

/// Spawns importer `id` ("0", "1", ... on data shard 0; "s1-0", ... on data
/// shard 1): a detached actor with its own connection to its shard's
/// database and its own spool file (`<data_dir>/spool/importer-<id>.spool`).
///
/// It answers each import_request with ok_atom only after the points are
/// durable (group commit): requests arriving within flush_interval_ms, or
/// until max_batch_points, share one transaction (binary COPY + latest
/// upsert + device marks). While PostgreSQL is unreachable it appends to the
/// spool and fsyncs before answering; it replays the spool, in order, once
/// PostgreSQL is back (checked every second). Answers `unavailable` when the
/// spool is full or cannot be written. A batch that PostgreSQL rejects fails
/// alone: the others of its group are written without it.
///
/// The handle returned is a supervisor (runtime::spawn_supervisor): an
/// importer that fails answers the requests it holds with `unavailable`
/// (nothing it had not stored was acknowledged) and is restarted with the
/// analysis workers' backoff settings; requests wait for it meanwhile.
///
/// Owner: actors::install; stopped (after a final flush) when the node stops.
caf::actor spawn_importer(caf::actor_system& sys, const context_ptr& ctx,
                          const std::string& database_url,
                          const std::string& data_dir, const std::string& id,
                          size_t spool_max_bytes);

} // namespace troupe::actors
