#pragma once

#include <spdlog/spdlog.h>

namespace troupe::http {

/// The module's logger, "troupe.http".
spdlog::logger& log();

} // namespace troupe::http
