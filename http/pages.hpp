#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace troupe::http {

class call;

/// Reads `limit` (default 100, at most 1000) and `cursor` (an opaque
/// position tagged `tag`) of a list request; answers 400 and returns false
/// on bad input.
bool page_params(call& c, char tag, int64_t& limit, std::string& after);

/// API.md's list body: {"items": ..., "next_cursor": ... | null}.
nlohmann::json page_body(nlohmann::json items, const std::string& next,
                         char tag);

/// A timestamp query parameter (ms or RFC 3339), `def` when absent;
/// answers 400 and returns nullopt when malformed.
std::optional<int64_t> time_param(call& c, const char* name, int64_t def);

} // namespace troupe::http
