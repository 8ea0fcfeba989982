#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace troupe::actors {

/// Errors the actors answer with; http/ maps each to a status and API.md's
/// error body. The context carries one human-readable line.
enum class errc : uint8_t {
  /// Not an error.
  none = 0,
  /// The request is malformed or invalid (400).
  bad_request,
  /// No or bad credentials (401).
  unauthorized,
  /// Authenticated but not allowed (403).
  forbidden,
  /// Unknown resource, or one in another tenant (404).
  not_found,
  /// The resource exists or is in a conflicting state (409).
  conflict,
  /// Over a limit; retry later (429).
  too_many_requests,
  /// Cannot store durably right now; retry later (503).
  unavailable,
};

} // namespace troupe::actors

CAF_ERROR_CODE_ENUM(troupe::actors::errc, "tr_actors")

namespace troupe::actors {

[[nodiscard]] inline caf::error make_actor_error(errc code, std::string what) {
  return caf::make_error(code, std::move(what));
}

/// A 429 whose context also carries the seconds to wait (Retry-After).
[[nodiscard]] inline caf::error make_throttled_error(std::string what,
                                                     int64_t retry_after_s) {
  return caf::make_error(errc::too_many_requests, std::move(what),
                         retry_after_s);
}

} // namespace troupe::actors
