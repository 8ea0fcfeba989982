#pragma once

#include <memory>

#include <spdlog/spdlog.h>

namespace troupe::storage {

/// The module's logger, "troupe.storage".
spdlog::logger& log();

} // namespace troupe::storage
