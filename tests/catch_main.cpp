// Catch2's runner for every test binary. SIGPIPE is ignored: a test that
// writes to a socket the server has closed (an oversized body, a refused
// connection) must see EPIPE and report it, not die from the signal.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <csignal>

int main(int argc, char* argv[]) {
  std::signal(SIGPIPE, SIG_IGN);
  return Catch::Session().run(argc, argv);
}
