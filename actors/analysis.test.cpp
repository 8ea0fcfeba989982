#include <catch2/catch.hpp>

#include "actors/analysis.hpp"

using namespace troupe::actors;
using namespace std::chrono;

TEST_CASE("rule operators") {
  for (auto op : {">", ">=", "<", "<=", "==", "!="})
    CHECK(valid_op(op));
  for (auto op : {"", "~", "=", "=>", "<>", "> "})
    CHECK_FALSE(valid_op(op));
  CHECK(compare(">", 81, 80));
  CHECK_FALSE(compare(">", 80, 80));
  CHECK(compare(">=", 80, 80));
  CHECK(compare("<", 79, 80));
  CHECK_FALSE(compare("<", 80, 80));
  CHECK(compare("<=", 80, 80));
  CHECK(compare("==", 80, 80));
  CHECK_FALSE(compare("==", 80.5, 80));
  CHECK(compare("!=", 80.5, 80));
  CHECK_FALSE(compare("~", 1, 0));
}

TEST_CASE("a rule without a duration looks at the latest value only") {
  window_stats none;
  CHECK(rule_breached(">", 80, 0, 95, none));
  CHECK_FALSE(rule_breached(">", 80, 0, 75, none));
}

TEST_CASE("a rule with a duration needs every point of the window") {
  // All points of the window above 80.
  CHECK(rule_breached(">", 80, 60, 95, {10, 81, 99, 0}));
  // One point at 80 in the window: not all breach.
  CHECK_FALSE(rule_breached(">", 80, 60, 95, {10, 80, 99, 1}));
  CHECK(rule_breached(">=", 80, 60, 95, {10, 80, 99, 1}));
  // An empty window never breaches, whatever the latest value.
  CHECK_FALSE(rule_breached(">", 80, 60, 95, {0, 0, 0, 0}));
  // The latest value must breach too.
  CHECK_FALSE(rule_breached(">", 80, 60, 70, {10, 81, 99, 0}));
  CHECK(rule_breached("<", 10, 30, 5, {3, 1, 9, 0}));
  CHECK_FALSE(rule_breached("<", 10, 30, 5, {3, 1, 10, 0}));
  CHECK(rule_breached("<=", 10, 30, 5, {3, 1, 10, 1}));
  CHECK(rule_breached("==", 1, 30, 1, {3, 1, 1, 3}));
  CHECK_FALSE(rule_breached("==", 1, 30, 1, {3, 0, 1, 2}));
  CHECK(rule_breached("!=", 1, 30, 2, {3, 2, 5, 0}));
  CHECK_FALSE(rule_breached("!=", 1, 30, 2, {3, 0, 5, 1}));
}

TEST_CASE("z-score anomalies need history and a large deviation") {
  // mean 20, sd 1: 23.5 is 3.5 sigma away.
  CHECK(is_anomaly(23.5, 24, 20, 1, 3.0));
  CHECK(is_anomaly(16.5, 24, 20, 1, 3.0));
  CHECK_FALSE(is_anomaly(22.5, 24, 20, 1, 3.0));
  CHECK_FALSE(is_anomaly(23.0, 24, 20, 1, 3.0)); // exactly 3 sigma
  // Fewer than 3 prior hours: never.
  CHECK_FALSE(is_anomaly(100, 2, 20, 1, 3.0));
  CHECK(is_anomaly(100, 3, 20, 1, 3.0));
  // A flat history: any real change stands out, rounding noise does not.
  CHECK(is_anomaly(20.5, 10, 20, 0, 3.0));
  CHECK_FALSE(is_anomaly(20 + 1e-12, 10, 20, 0, 3.0));
  CHECK_FALSE(is_anomaly(20, 10, 20, 0, 3.0));
}

TEST_CASE("an input is quarantined after repeated failures, once") {
  quarantine q{3};
  CHECK_FALSE(q.fail("dev-1"));
  CHECK_FALSE(q.fail("dev-1"));
  CHECK_FALSE(q.fail("dev-2"));
  CHECK(q.fail("dev-1"));
  CHECK(q.contains("dev-1"));
  CHECK_FALSE(q.contains("dev-2"));
  // Already quarantined: counted once.
  CHECK_FALSE(q.fail("dev-1"));
  CHECK(q.size() == 1);
  CHECK(q.units() == std::vector<std::string>{"dev-1"});
}
