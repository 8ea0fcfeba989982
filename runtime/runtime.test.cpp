#include <catch2/catch.hpp>

#include <atomic>

#include <caf/all.hpp>

#include "runtime/atoms.hpp"
#include "runtime/bridge.hpp"
#include "runtime/failure_window.hpp"
#include "runtime/local_entities.hpp"
#include "runtime/metrics.hpp"
#include "runtime/replicas.hpp"
#include "runtime/shard_region.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/typed.hpp"

using namespace troupe::runtime;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::seconds;

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
    [=](idle_atom) {
      self->send(region, passivate_atom::value, key, self->address());
    },
    [=](stop_atom) { self->quit(); },
  };
}

using crash_atom = caf::atom_constant<caf::atom("crash")>;

std::atomic<int> workers_started{0};

// A worker that answers its generation and throws when told to.
caf::behavior flaky_worker(caf::event_based_actor*, int generation) {
  return {
    [=](get_atom) { return generation; },
    [=](crash_atom) -> int { throw std::runtime_error("injected"); },
  };
}

/// A region of counter entities on a one-node map.
caf::actor spawn_counter_region(caf::actor_system& sys,
                                std::shared_ptr<local_entities> local
                                = nullptr) {
  return spawn_shard_region(
    sys, "test",
    [](caf::actor_system& sys, const caf::actor& region,
       const std::string& key) {
      return sys.spawn(counter_entity, region, key);
    },
    shard_map{16, "n1"}, "n1", false, nullptr, std::move(local));
}

/// Asks `key`'s counter through its region.
caf::expected<int> ask_get(caf::actor_system& sys, const caf::actor& region,
                           const std::string& key) {
  return ask<int>(sys, region, 2s,
                  caf::make_message(route_atom::value, key,
                                    caf::make_message(get_atom::value)));
}

/// Tells `key`'s counter to passivate itself.
void passivate(const caf::actor& region, const std::string& key) {
  caf::anon_send(region, route_atom::value, key,
                 caf::make_message(idle_atom::value));
}

/// Asks `key`'s counter until a fresh one answers 1 (bounded); -1 if an
/// ask fails.
int await_fresh(caf::actor_system& sys, const caf::actor& region,
                const std::string& key) {
  int v = 0;
  for (int i = 0; i < 100 && v != 1; ++i) {
    auto r = ask_get(sys, region, key);
    if (!r)
      return -1;
    v = *r;
    if (v != 1)
      std::this_thread::sleep_for(10ms);
  }
  return v;
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
  auto region = spawn_counter_region(sys);
  CHECK(*ask_get(sys, region, "a") == 1);
  CHECK(*ask_get(sys, region, "a") == 2);
  CHECK(*ask_get(sys, region, "b") == 1);
  CHECK(spawned == 2);
  // Passivate "a", then use it again: a fresh entity answers.
  passivate(region, "a");
  CHECK(await_fresh(sys, region, "a") == 1);
  CHECK(spawned == 3);
  CHECK(*ask<int64_t>(sys, region, 2s, caf::make_message(count_atom::value))
        == 2);
  caf::anon_send(region, stop_atom::value);
}

TEST_CASE("the region publishes the entities it serves and withdraws them "
          "before they stop") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto held = std::make_shared<lease>();
  held->renew_until(lease::clock::now() + 60s);
  auto local = std::make_shared<local_entities>(held);
  auto region = spawn_counter_region(sys, local);
  CHECK_FALSE(local->find("a"));
  CHECK(*ask_get(sys, region, "a") == 1);
  // The published handle is the entity itself: it counts on.
  auto a = local->find("a");
  REQUIRE(a);
  CHECK(*ask<int>(sys, a, 2s, caf::make_message(get_atom::value)) == 2);
  CHECK(*ask_get(sys, region, "a") == 3);
  // Without a valid lease nothing is found.
  held->revoke();
  CHECK_FALSE(local->find("a"));
  held->renew_until(lease::clock::now() + 60s);
  CHECK(local->find("a"));
  // A fence hides everything at once, until the region applied it.
  held->fence();
  CHECK_FALSE(local->find("a"));
  placement p;
  p.map = shard_map{16, "n1"};
  p.fences = held->fences();
  REQUIRE(ask<int64_t>(sys, region, 2s,
                       caf::make_message(placement_atom::value, std::move(p))));
  CHECK(local->find("a"));
  // Passivated: withdrawn; the old handle no longer answers, and the next
  // request through the region publishes a fresh entity.
  passivate(region, "a");
  for (int i = 0; i < 200 && local->find("a"); ++i)
    std::this_thread::sleep_for(5ms);
  CHECK_FALSE(local->find("a"));
  auto stale = ask<int>(sys, a, 2s, caf::make_message(get_atom::value));
  REQUIRE_FALSE(stale);
  CHECK(stale.error() == caf::sec::request_receiver_down);
  CHECK(await_fresh(sys, region, "a") == 1);
  auto fresh = local->find("a");
  REQUIRE(fresh);
  CHECK(fresh != a);
  // A drain withdraws everything.
  caf::anon_send(region, stop_atom::value);
  for (int i = 0; i < 200 && local->find("a"); ++i)
    std::this_thread::sleep_for(5ms);
  CHECK_FALSE(local->find("a"));
}

TEST_CASE("restarts back off and trip after too many in the window") {
  restart_policy p{3, seconds(60), milliseconds(100), seconds(1)};
  auto t = restart_policy::clock::now();
  CHECK(p.on_crash(t) == milliseconds(100));
  CHECK(p.on_crash(t + seconds(1)) == milliseconds(200));
  CHECK(p.on_crash(t + seconds(2)) == milliseconds(400));
  CHECK_FALSE(p.tripped());
  // The fourth within 60 s trips: down for a whole window.
  CHECK(p.on_crash(t + seconds(3)) == seconds(60));
  CHECK(p.tripped());
  // Afterwards the count starts over.
  CHECK(p.on_crash(t + seconds(70)) == milliseconds(100));
  CHECK_FALSE(p.tripped());
  // Crashes older than the window are forgotten.
  CHECK(p.on_crash(t + seconds(200)) == milliseconds(100));
}

TEST_CASE("restart backoff is capped") {
  restart_policy p{100, seconds(60), milliseconds(500), seconds(2)};
  auto t = restart_policy::clock::now();
  milliseconds last{0};
  for (int i = 0; i < 10; ++i)
    last = p.on_crash(t + milliseconds(i));
  CHECK(last == seconds(2));
}

TEST_CASE("a supervised worker is restarted and keeps serving") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  workers_started = 0;
  auto sup = spawn_supervisor(
    sys, "flaky",
    [](caf::actor_system& sys) {
      return sys.spawn(flaky_worker, ++workers_started);
    },
    restart_policy{5, seconds(60), milliseconds(10)});
  auto gen = [&] {
    return ask<int>(sys, sup, 2s, caf::make_message(get_atom::value));
  };
  REQUIRE(gen());
  CHECK(*gen() == 1);
  // The crash fails that request only.
  CHECK(!ask<int>(sys, sup, 2s, caf::make_message(crash_atom::value)));
  // The next worker answers (a request racing the crash may still reach
  // the dead one; those sent while it is down wait for the next).
  caf::expected<int> next = caf::sec::request_timeout;
  for (int i = 0; i < 50 && !next; ++i)
    next = gen();
  REQUIRE(next);
  CHECK(*next == 2);
  CHECK(workers_started == 2);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_CASE("a failure window throttles for at most one window") {
  failure_window w{3, seconds(10)};
  auto t = failure_window::clock::now();
  CHECK(w.blocked_for(t).count() == 0);
  w.fail(t);
  w.fail(t + seconds(1));
  CHECK(w.blocked_for(t + seconds(2)).count() == 0);
  w.fail(t + seconds(2));
  // Three within 10 s: blocked until the first leaves the window.
  CHECK(w.blocked_for(t + seconds(3)) == seconds(7));
  CHECK(retry_after_s(w.blocked_for(t + seconds(3))) == 7);
  CHECK(w.blocked_for(t + seconds(10)).count() == 0);
  // Failures beyond the limit keep only the newest max.
  for (int i = 0; i < 100; ++i)
    w.fail(t + seconds(20));
  CHECK(w.blocked_for(t + seconds(29)) == seconds(1));
  CHECK(w.blocked_for(t + seconds(30)).count() == 0);
  CHECK(w.idle(t + seconds(30)));
  w.fail(t + seconds(31));
  w.clear();
  CHECK(w.blocked_for(t + seconds(31)).count() == 0);
}

namespace {

using probe_actor = caf::typed_actor<caf::replies_to<int>::with<std::string>,
                                     caf::replies_to<get_atom>::with<double>,
                                     caf::reacts_to<idle_atom>>;

} // namespace

TEST_CASE("reply types come from the typed interface") {
  static_assert(
    std::is_same<reply_of<probe_actor, int>, std::string>::value);
  static_assert(std::is_same<reply_of<probe_actor, get_atom>, double>::value);
  static_assert(std::is_same<reply_of<probe_actor, idle_atom>, void>::value);
  SUCCEED("checked at compile time");
}

TEST_CASE("WAL positions parse as PostgreSQL prints them") {
  using troupe::runtime::parse_lsn;
  CHECK(parse_lsn("0/0") == uint64_t{0});
  CHECK(parse_lsn("16/B374D848") == (uint64_t{0x16} << 32 | 0xB374D848));
  CHECK(parse_lsn("ffffffff/ffffffff") == ~uint64_t{0});
  CHECK(!parse_lsn(""));
  CHECK(!parse_lsn("16"));
  CHECK(!parse_lsn("/1"));
  CHECK(!parse_lsn("1/"));
  CHECK(!parse_lsn("1/x"));
  CHECK(!parse_lsn("123456789/0"));
}

TEST_CASE("replica lag is the age of the newest primary position reached") {
  troupe::runtime::lag_tracker t;
  CHECK(t.lag_ms(0, 0) == -1);
  t.primary_at(1000, 100);
  t.primary_at(1250, 200);
  t.primary_at(1500, 300);
  // Caught up with the newest sample: no lag, however old that sample is
  // (an idle primary writes nothing a replica could miss).
  CHECK(t.lag_ms(9000, 300) == 0);
  CHECK(t.lag_ms(1600, 400) == 0);
  // Reached the 1250 sample but not the 1500 one: as old as 1250's data.
  CHECK(t.lag_ms(1600, 250) == 350);
  CHECK(t.lag_ms(1600, 200) == 350);
  // Behind every sample: at least as old as the oldest.
  CHECK(t.lag_ms(1600, 50) == 600);
  // Paused replay while the primary writes on: the lag grows with time.
  for (int64_t i = 1; i <= 10; ++i)
    t.primary_at(1500 + i * 250, 300 + static_cast<uint64_t>(i) * 100);
  CHECK(t.lag_ms(4000, 300) == 2500);
  CHECK(t.lag_ms(5000, 300) == 3500);
}

TEST_CASE("the bridge answers each ask once: the reply, or a timeout") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  using hold_atom = caf::atom_constant<caf::atom("hold")>;
  // Answers get at once; holds a hold's promise until told to release it.
  auto held = std::make_shared<std::vector<caf::response_promise>>();
  auto dest = sys.spawn([held](caf::event_based_actor* self) -> caf::behavior {
    return {
      [](get_atom) { return 7; },
      [=](hold_atom) -> caf::result<int> {
        held->push_back(self->make_response_promise());
        return caf::delegated<int>{};
      },
      [=](stop_atom) {
        for (auto& rp : *held)
          rp.deliver(8);
        held->clear();
      },
    };
  });
  bridge b{sys, 2};
  struct outcome {
    std::mutex mx;
    std::condition_variable cv;
    std::vector<caf::expected<int>> got;
  };
  auto out = std::make_shared<outcome>();
  auto k = [out](caf::expected<int> r) {
    std::lock_guard<std::mutex> g{out->mx};
    out->got.push_back(std::move(r));
    out->cv.notify_all();
  };
  auto wait_for = [&](size_t n) {
    std::unique_lock<std::mutex> g{out->mx};
    return out->cv.wait_for(g, 5s, [&] { return out->got.size() >= n; });
  };
  b.ask<int>(dest, 2s, caf::make_message(get_atom::value), k);
  REQUIRE(wait_for(1));
  CHECK(*out->got[0] == 7);
  // No reply in time: a timeout, well before the 5 s wait gives up.
  auto t0 = std::chrono::steady_clock::now();
  b.ask<int>(dest, 100ms, caf::make_message(hold_atom::value), k);
  REQUIRE(wait_for(2));
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  CHECK(out->got[1].error() == caf::sec::request_timeout);
  // The late reply goes nowhere; later asks still work.
  caf::anon_send(dest, stop_atom::value);
  b.ask<int>(dest, 2s, caf::make_message(get_atom::value), k);
  REQUIRE(wait_for(3));
  std::this_thread::sleep_for(200ms);
  std::lock_guard<std::mutex> g{out->mx};
  CHECK(out->got.size() == 3);
  CHECK(*out->got[2] == 7);
  b.stop();
  caf::anon_send_exit(dest, caf::exit_reason::user_shutdown);
}
