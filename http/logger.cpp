#include "http/logger.hpp"

#include "runtime/logger.hpp"

namespace troupe::http {

spdlog::logger& log() {
  static auto instance = runtime::module_logger("troupe.http");
  return *instance;
}

} // namespace troupe::http
