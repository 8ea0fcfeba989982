#include "runtime/logger.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace troupe::runtime {

std::shared_ptr<spdlog::logger> module_logger(const std::string& name) {
  if (auto existing = spdlog::get(name))
    return existing;
  auto l = spdlog::default_logger()->clone(name);
  spdlog::register_logger(l);
  return l;
}

spdlog::logger& log() {
  static auto instance = module_logger("troupe.runtime");
  return *instance;
}

void setup_logging(const std::string& level, const std::string& node_id) {
  auto lvl = spdlog::level::from_str(level);
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto def = std::make_shared<spdlog::logger>("troupe", sink);
  spdlog::set_default_logger(def);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ %n node=" + node_id
                        + " %v",
                      spdlog::pattern_time_type::utc);
  spdlog::set_level(lvl);
  // Existing module loggers follow the new sink and level.
  spdlog::apply_all([&](std::shared_ptr<spdlog::logger> l) {
    l->sinks() = def->sinks();
    l->set_level(lvl);
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ %n node=" + node_id + " %v",
                   spdlog::pattern_time_type::utc);
  });
  spdlog::flush_on(spdlog::level::warn);
}

} // namespace troupe::runtime
