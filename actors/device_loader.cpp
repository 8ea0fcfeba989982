#include "actors/device_loader.hpp"

#include <caf/all.hpp>

#include "actors/errc.hpp"
#include "actors/logger.hpp"
#include "actors/types.hpp"
#include "cluster-config/config.hpp"
#include "runtime/db_pool.hpp"
#include "runtime/metrics.hpp"

namespace troupe::actors {

namespace {

using runtime::db_call;

struct loader_state {
  std::string name = "device_loader";
  context_ptr ctx;
  size_t max_batch = 1000;
  std::vector<std::pair<std::string, caf::response_promise>> waiting;
  bool flush_armed = false;
  /// Batches being read; the next waits for one to finish when two are.
  int in_flight = 0;
  runtime::histogram* batch_size = nullptr;
  runtime::counter* loaded = nullptr;
};

using loader_actor = caf::stateful_actor<loader_state>;
using batch_ptr = std::shared_ptr<
  std::vector<std::pair<std::string, caf::response_promise>>>;
using rows_ptr = std::shared_ptr<std::map<std::string, storage::device_row>>;

void load_shard_data(loader_actor* self, batch_ptr batch, rows_ptr rows);

void flush(loader_actor* self) {
  auto& st = self->state;
  if (st.waiting.empty() || st.in_flight >= 2)
    return;
  auto n = std::min(st.waiting.size(), st.max_batch);
  auto batch = std::make_shared<
    std::vector<std::pair<std::string, caf::response_promise>>>(
    std::make_move_iterator(st.waiting.begin()),
    std::make_move_iterator(st.waiting.begin() + static_cast<long>(n)));
  st.waiting.erase(st.waiting.begin(), st.waiting.begin() + static_cast<long>(n));
  std::vector<std::string> ids;
  ids.reserve(batch->size());
  for (auto& [id, rp] : *batch)
    ids.push_back(id);
  ++st.in_flight;
  st.batch_size->observe(static_cast<double>(ids.size()));
  db_call<std::map<std::string, storage::device_row>>(
    self, st.ctx->db,
    [ids = std::move(ids)](storage::connection& c) {
      return storage::load_devices(c, ids, now_ms());
    },
    [self, batch](caf::expected<std::map<std::string, storage::device_row>>
                    rows) {
      auto& st = self->state;
      if (!rows) {
        --st.in_flight;
        log().warn("loading {} devices failed: {}", batch->size(),
                   config::describe(rows.error()));
        for (auto& [id, rp] : *batch)
          rp.deliver(rows.error());
        flush(self);
        return;
      }
      load_shard_data(self, batch,
                      std::make_shared<std::map<std::string,
                                                storage::device_row>>(
                        std::move(*rows)));
    });
}

/// Devices placed on other data shards get what those hold (batch mark,
/// latest values, open commands), one job per shard; then every waiter of
/// the batch is answered. A shard that fails fails only its own devices.
void load_shard_data(loader_actor* self, batch_ptr batch, rows_ptr rows) {
  auto& st = self->state;
  std::map<size_t, std::vector<storage::device_row*>> by_shard;
  auto failed = std::make_shared<std::map<size_t, caf::error>>();
  for (auto& [id, row] : *rows) {
    auto s = static_cast<size_t>(row.data_shard);
    if (s == 0)
      continue;
    if (s >= st.ctx->data.size())
      (*failed)[s] = make_actor_error(
        errc::unavailable, "data shard " + std::to_string(s)
                             + " is not configured on this node");
    else if (!st.ctx->shard_up(s))
      (*failed)[s] = make_actor_error(
        errc::unavailable, "data shard " + std::to_string(s)
                             + " does not answer");
    else
      by_shard[s].push_back(&row);
  }
  auto left = std::make_shared<size_t>(by_shard.size());
  auto finish = [self, batch, rows, failed] {
    auto& st = self->state;
    --st.in_flight;
    st.loaded->inc(rows->size());
    for (auto& [id, rp] : *batch) {
      auto it = rows->find(id);
      if (it == rows->end()) {
        rp.deliver(loaded_device{});
        continue;
      }
      auto f = failed->find(static_cast<size_t>(it->second.data_shard));
      if (f != failed->end())
        rp.deliver(f->second);
      else
        rp.deliver(loaded_device{std::move(it->second)});
    }
    flush(self);
  };
  if (by_shard.empty()) {
    finish();
    return;
  }
  for (auto& [s, ptrs] : by_shard) {
    // The job works on copies: it may still run after the loader gave up
    // waiting for it (and answered from *rows).
    std::vector<storage::device_row> part;
    for (auto* p : ptrs)
      part.push_back(*p);
    db_call<std::vector<storage::device_row>>(
      self, st.ctx->data[s].db,
      [part = std::move(part)](storage::connection& c) mutable
        -> caf::expected<std::vector<storage::device_row>> {
        std::vector<storage::device_row*> at;
        for (auto& r : part)
          at.push_back(&r);
        if (auto err = storage::load_device_data(c, at))
          return err;
        return std::move(part);
      },
      [s = s, rows, failed, left, finish](
        caf::expected<std::vector<storage::device_row>> r) mutable {
        if (!r) {
          log().warn("loading devices of data shard {} failed: {}", s,
                     config::describe(r.error()));
          (*failed)[s] = std::move(r.error());
        } else {
          for (auto& row : *r)
            (*rows)[row.id] = std::move(row);
        }
        if (--*left == 0)
          finish();
      });
  }
}

caf::behavior device_loader(loader_actor* self, context_ptr ctx,
                            size_t max_batch) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.max_batch = max_batch;
  st.batch_size = &runtime::metrics().get_histogram(
    "troupe_device_load_batch", "Devices loaded per batch", "",
    runtime::size_buckets());
  st.loaded = &runtime::metrics().get_counter("troupe_devices_loaded_total",
                                              "Device states loaded from "
                                              "PostgreSQL");
  return {
    [=](load_atom, std::string& id) -> caf::result<loaded_device> {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      st.waiting.emplace_back(std::move(id), rp);
      if (st.waiting.size() >= st.max_batch) {
        flush(self);
      } else if (!st.flush_armed) {
        // To the back of the mailbox: every request already queued joins.
        st.flush_armed = true;
        self->send(self, flush_atom::value);
      }
      return caf::delegated<loaded_device>{};
    },
    [=](flush_atom) {
      self->state.flush_armed = false;
      flush(self);
    },
  };
}

} // namespace

caf::actor spawn_device_loader(caf::actor_system& sys, const context_ptr& ctx,
                               size_t max_batch) {
  return sys.spawn(device_loader, ctx, max_batch);
}

} // namespace troupe::actors
