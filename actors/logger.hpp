#pragma once

#include <spdlog/spdlog.h>

namespace troupe::actors {

/// The module's logger, "troupe.actors".
spdlog::logger& log();

} // namespace troupe::actors
