#pragma once

#include <string_view>

namespace troupe::http {

/// The OpenAPI 3.1 document of the whole API (http/openapi.json, embedded
/// at build time), served at GET /api/v1/openapi.json. The unit test
/// openapi.test.cpp fails when a route exists that it does not describe, or
/// the reverse.
std::string_view openapi_document();

} // namespace troupe::http
