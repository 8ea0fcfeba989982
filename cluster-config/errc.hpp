#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace troupe::config {

/// Errors of the configuration module.
enum class errc : uint8_t {
  /// Not an error.
  none = 0,
  /// A setting has a value of the wrong type or out of range.
  invalid_value,
  /// A setting's name is unknown.
  unknown_key,
  /// The config file cannot be read or is not valid syntax.
  bad_file,
  /// Two settings contradict each other.
  contradiction,
};

} // namespace troupe::config

CAF_ERROR_CODE_ENUM(troupe::config::errc, "tr_config")

namespace troupe::config {

/// Makes an error whose context is one human-readable line.
[[nodiscard]] inline caf::error make_config_error(errc code, std::string what) {
  return caf::make_error(code, std::move(what));
}

/// Returns the human-readable line of an error made by any troupe module
/// (the first string in its context), or a generic rendering.
std::string describe(const caf::error& err);

} // namespace troupe::config
