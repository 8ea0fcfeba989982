#include "http/errc.hpp"

#include <caf/sec.hpp>
#include <nlohmann/json.hpp>

#include "actors/errc.hpp"
#include "cluster-config/config.hpp"
#include "runtime/errc.hpp"
#include "storage/errc.hpp"

namespace troupe::http {

api_error to_api_error(const caf::error& err) {
  auto msg = config::describe(err);
  auto cat = err.category();
  if (cat == caf::atom("tr_actors")) {
    switch (static_cast<actors::errc>(err.code())) {
      case actors::errc::bad_request:
        return {400, "invalid_request", msg};
      case actors::errc::unauthorized:
        return {401, "unauthorized", msg};
      case actors::errc::forbidden:
        return {403, "forbidden", msg};
      case actors::errc::not_found:
        return {404, "not_found", msg};
      case actors::errc::conflict:
        return {409, "conflict", msg};
      case actors::errc::too_many_requests: {
        auto& ctx = err.context();
        int retry = 1;
        if (ctx.size() > 1 && ctx.match_element<int64_t>(1))
          retry = static_cast<int>(ctx.get_as<int64_t>(1));
        return {429, "too_many_requests", msg, retry};
      }
      case actors::errc::unavailable:
        return {503, "unavailable", msg, 5};
      default:
        break;
    }
  } else if (cat == caf::atom("tr_storage")) {
    switch (static_cast<storage::errc>(err.code())) {
      case storage::errc::conflict:
        return {409, "conflict", msg};
      case storage::errc::not_found:
        return {404, "not_found", msg};
      case storage::errc::unavailable:
      case storage::errc::spool_full:
      case storage::errc::spool_io:
        return {503, "unavailable", "storage is unavailable right now", 5};
      default:
        return {500, "internal", "storage error"};
    }
  } else if (cat == caf::atom("tr_runtime")) {
    switch (static_cast<runtime::errc>(err.code())) {
      case runtime::errc::overloaded:
        return {429, "too_many_requests", msg, 1};
      case runtime::errc::shutting_down:
      case runtime::errc::moved:
      case runtime::errc::owner_lost:
        return {503, "unavailable", msg, 1};
      default:
        break;
    }
  } else if (cat == caf::atom("system")) {
    switch (static_cast<caf::sec>(err.code())) {
      case caf::sec::request_timeout:
        return {503, "timeout", "the request timed out", 1};
      case caf::sec::request_receiver_down:
        return {503, "unavailable", "the actor for this request stopped; "
                                    "retry",
                1};
      default:
        break;
    }
  }
  return {500, "internal", "internal error"};
}

std::string error_body(const api_error& e) {
  nlohmann::json j = {{"error", {{"code", e.code}, {"message", e.message}}}};
  return j.dump();
}

} // namespace troupe::http
