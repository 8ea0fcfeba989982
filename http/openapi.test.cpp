#include "http/openapi.hpp"

#include <set>
#include <string>
#include <utility>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "http/router.hpp"
#include "http/routes.hpp"

using namespace troupe::http;

namespace {

using route_set = std::set<std::pair<std::string, std::string>>;

route_set served() {
  router r;
  add_device_routes(r);
  add_user_routes(r);
  add_admin_routes(r);
  add_analysis_routes(r);
  add_ops_routes(r);
  route_set out;
  for (auto& rt : r.routes())
    out.emplace(rt.method, rt.pattern);
  return out;
}

std::string upper(std::string s) {
  for (auto& ch : s)
    ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

} // namespace

TEST_CASE("the OpenAPI document is OpenAPI 3.1 JSON") {
  auto doc = nlohmann::json::parse(openapi_document());
  CHECK(doc.at("openapi").get<std::string>().rfind("3.1", 0) == 0);
  CHECK(doc.at("info").contains("title"));
  CHECK(doc.at("components").contains("schemas"));
}

TEST_CASE("the OpenAPI document describes exactly the routes served") {
  auto doc = nlohmann::json::parse(openapi_document());
  static const std::set<std::string> methods{"get",    "put",  "post",
                                             "delete", "patch", "head",
                                             "options"};
  route_set documented;
  for (auto& [path, item] : doc.at("paths").items())
    for (auto& [m, op] : item.items())
      if (methods.count(m)) {
        documented.emplace(upper(m), path);
        INFO(m << " " << path);
        CHECK(op.contains("operationId"));
        CHECK(op.contains("responses"));
      }
  auto routes = served();
  for (auto& r : routes) {
    INFO("served but not in http/openapi.json: " << r.first << " "
                                                 << r.second);
    CHECK(documented.count(r));
  }
  for (auto& d : documented) {
    INFO("in http/openapi.json but not served: " << d.first << " "
                                                 << d.second);
    CHECK(routes.count(d));
  }
}

TEST_CASE("every $ref in the OpenAPI document resolves") {
  auto doc = nlohmann::json::parse(openapi_document());
  std::vector<const nlohmann::json*> pending{&doc};
  size_t refs = 0;
  while (!pending.empty()) {
    auto* j = pending.back();
    pending.pop_back();
    if (j->is_object()) {
      if (auto it = j->find("$ref"); it != j->end() && it->is_string()) {
        auto ref = it->get<std::string>();
        INFO(ref);
        REQUIRE(ref.rfind("#/", 0) == 0);
        CHECK(doc.contains(nlohmann::json::json_pointer(ref.substr(1))));
        ++refs;
      }
      for (auto& [k, v] : j->items())
        pending.push_back(&v);
    } else if (j->is_array()) {
      for (auto& v : *j)
        pending.push_back(&v);
    }
  }
  CHECK(refs > 10);
}
