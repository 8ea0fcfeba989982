#include "runtime/shard_map.hpp"

#include <catch2/catch.hpp>

using troupe::runtime::shard_map;

TEST_CASE("keys hash stably into shards") {
  CHECK(shard_map::shard_of("dev-1", 1024) == shard_map::shard_of("dev-1", 1024));
  CHECK(shard_map::shard_of("", 1024) < 1024);
  // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
  CHECK(shard_map::shard_of("a", 1024) == 0xaf63dc4c8601ec8cull % 1024);
  std::vector<int> hist(16, 0);
  for (int i = 0; i < 16000; ++i)
    ++hist[shard_map::shard_of("device-" + std::to_string(i), 16)];
  for (auto h : hist) {
    CHECK(h > 800);
    CHECK(h < 1200);
  }
}

TEST_CASE("rebalance moves as few shards as possible") {
  shard_map one{1024, "a"};
  CHECK(one.count_owned("a") == 1024);
  auto two = one.rebalance({"a", "b"});
  CHECK(two.version() == 2);
  CHECK(two.count_owned("a") == 512);
  CHECK(two.count_owned("b") == 512);
  auto three = two.rebalance({"a", "b", "c"});
  size_t moved = 0;
  for (uint32_t s = 0; s < 1024; ++s)
    if (three.owner(s) != two.owner(s))
      ++moved;
  // c takes its share (341 or 342) and nothing else moves.
  CHECK(moved == three.count_owned("c"));
  CHECK(three.count_owned("c") >= 341);
  auto gone = three.rebalance({"a", "c"});
  for (uint32_t s = 0; s < 1024; ++s)
    if (three.owner(s) != "b")
      CHECK(gone.owner(s) == three.owner(s));
  CHECK(gone.count_owned("b") == 0);
  CHECK(gone.count_owned("a") + gone.count_owned("c") == 1024);
}
