#pragma once

#include <string>

#include <caf/error.hpp>

namespace troupe::http {

/// An HTTP error as API.md writes it: status, snake_case code, a message.
struct api_error {
  int status = 500;
  std::string code = "internal";
  std::string message = "internal error";
  /// Seconds for Retry-After (429, 503); 0: no header.
  int retry_after_s = 0;
};

/// The one table that maps every module's errors to HTTP.
api_error to_api_error(const caf::error& err);

/// Renders {"error": {"code": ..., "message": ...}}.
std::string error_body(const api_error& e);

} // namespace troupe::http
