#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace troupe::storage {

/// Errors of the storage module.
enum class errc : uint8_t {
  /// Not an error.
  none = 0,
  /// PostgreSQL cannot be reached or the connection broke.
  unavailable,
  /// A statement failed for a reason other than connectivity.
  query_failed,
  /// A unique constraint was violated (the row exists).
  conflict,
  /// The row does not exist.
  not_found,
  /// The local spool is full.
  spool_full,
  /// The local spool cannot be written or fsynced.
  spool_io,
  /// The embedded PostgreSQL could not be set up or started.
  embedded_failed,
  /// Committed on the primary, but no standby has confirmed it (yet).
  unreplicated,
  /// The database was migrated by a newer troupe than this one.
  schema_too_new,
};

} // namespace troupe::storage

CAF_ERROR_CODE_ENUM(troupe::storage::errc, "tr_storage")

namespace troupe::storage {

[[nodiscard]] inline caf::error make_storage_error(errc code,
                                                   std::string what) {
  return caf::make_error(code, std::move(what));
}

} // namespace troupe::storage
