#include <catch2/catch.hpp>

#include <atomic>

#include <caf/all.hpp>

#include "runtime/atoms.hpp"
#include "runtime/bridge.hpp"
#include "runtime/metrics.hpp"
#include "runtime/shard_region.hpp"

using namespace troupe::runtime;
using namespace std::chrono_literals;

namespace {

using get_atom = caf::atom_constant<caf::atom("get")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;

std::atomic<int> spawned{0};

// An entity that counts messages and passivates when told to.
caf::behavior counter_entity(caf::event_based_actor* self, caf::actor region,
                             std::string key) {
  ++spawned;
  auto n = std::make_shared<int>(0);
  return {
    [=](get_atom) { return ++*n; },
    [=](idle_atom) { self->send(region, passivate_atom::value, key); },
    [=](stop_atom) { self->quit(); },
  };
}

} // namespace

TEST_CASE("metrics render in Prometheus text format") {
  registry r;
  r.get_counter("t_requests_total", "Requests", "route=\"/a\"").inc(3);
  r.get_gauge("t_depth", "Depth").set(-2);
  r.get_histogram("t_latency_seconds", "Latency").observe(0.003);
  auto text = r.render();
  CHECK(text.find("# TYPE t_requests_total counter") != std::string::npos);
  CHECK(text.find("t_requests_total{route=\"/a\"} 3") != std::string::npos);
  CHECK(text.find("t_depth -2") != std::string::npos);
  CHECK(text.find("t_latency_seconds_bucket{le=\"0.005\"} 1")
        != std::string::npos);
  CHECK(text.find("t_latency_seconds_bucket{le=\"0.0025\"} 0")
        != std::string::npos);
  CHECK(text.find("t_latency_seconds_count 1") != std::string::npos);
}

TEST_CASE("the shard region spawns on demand and reactivates after "
          "passivation") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  spawned = 0;
  auto region = spawn_shard_region(
    sys, "test",
    [](caf::actor_system& sys, const caf::actor& region,
       const std::string& key) {
      return sys.spawn(counter_entity, region, key);
    },
    shard_map{16, "n1"}, "n1", false);
  auto ask_get = [&](const std::string& key) {
    return ask<int>(sys, region, 2s,
                    caf::make_message(route_atom::value, key,
                                      caf::make_message(get_atom::value)));
  };
  CHECK(*ask_get("a") == 1);
  CHECK(*ask_get("a") == 2);
  CHECK(*ask_get("b") == 1);
  CHECK(spawned == 2);
  // Passivate "a", then use it again: a fresh entity answers.
  caf::anon_send(region, route_atom::value, std::string{"a"},
                 caf::make_message(idle_atom::value));
  int v = 0;
  for (int i = 0; i < 100 && v != 1; ++i) {
    v = *ask_get("a");
    if (v != 1)
      std::this_thread::sleep_for(10ms);
  }
  CHECK(v == 1);
  CHECK(spawned == 3);
  CHECK(*ask<int64_t>(sys, region, 2s, caf::make_message(count_atom::value))
        == 2);
  caf::anon_send(region, stop_atom::value);
}
