// troupe: the executable. Parses arguments, loads and validates the
// configuration, installs the actors and the HTTP edge into a node, and
// hands over. The only file that includes every module.
#include <cstdio>
#include <cstdlib>

#include "actors/install.hpp"
#include "cluster-config/config.hpp"
#include "http/edge.hpp"
#include "runtime/node.hpp"

int main(int argc, char** argv) {
  using namespace troupe;
  auto cl = config::parse_args(argc, argv);
  if (!cl) {
    std::fprintf(stderr, "troupe: %s\n", config::describe(cl.error()).c_str());
    return 2;
  }
  if (cl->command == "help") {
    std::fputs(config::usage().c_str(), stdout);
    return 0;
  }
  if (cl->command == "version") {
    std::puts("troupe 0.1.0");
    return 0;
  }
  auto cfg = config::load(*cl, [](const std::string& k) {
    auto v = std::getenv(k.c_str());
    return v ? std::optional<std::string>{v} : std::nullopt;
  });
  if (!cfg) {
    std::fprintf(stderr, "troupe: invalid configuration: %s\n",
                 config::describe(cfg.error()).c_str());
    return 2;
  }
  if (cl->command == "config") {
    std::fputs(config::render(*cfg).c_str(), stdout);
    return 0;
  }
  runtime::node node{std::move(*cfg)};
  auto actors = actors::install(node);
  http::install(node, actors);
  return node.run();
}
