#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace troupe::runtime {

/// Errors of the runtime module.
enum class errc : uint8_t {
  /// Not an error.
  none = 0,
  /// A bounded queue is full; the caller should retry later.
  overloaded,
  /// The node is stopping and takes no new work.
  shutting_down,
  /// The shard is owned by another node (retry with a newer map). The
  /// request was not served.
  moved,
  /// The node serving the request went away before answering: it may or
  /// may not have been served, so only the client may retry (503).
  owner_lost,
};

} // namespace troupe::runtime

CAF_ERROR_CODE_ENUM(troupe::runtime::errc, "tr_runtime")

namespace troupe::runtime {

[[nodiscard]] inline caf::error make_runtime_error(errc code,
                                                   std::string what) {
  return caf::make_error(code, std::move(what));
}

} // namespace troupe::runtime
