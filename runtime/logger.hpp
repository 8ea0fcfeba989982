#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace troupe::runtime {

/// The module's logger, "troupe.runtime".
spdlog::logger& log();

/// Returns (creating on first use) the logger named `name` ("troupe.http"),
/// sharing the default sink and pattern.
std::shared_ptr<spdlog::logger> module_logger(const std::string& name);

/// Sets the level and the pattern (which carries node=<id>) of every troupe
/// logger. Called once by node::run before anything logs.
void setup_logging(const std::string& level, const std::string& node_id);

} // namespace troupe::runtime
