// Analysis results, alerts and threshold rules (API.md, user side).

#include "http/routes.hpp"

#include <caf/all.hpp>

#include "actors/context.hpp"
#include "http/call.hpp"
#include "http/pages.hpp"
#include "http/parse.hpp"
#include "http/render.hpp"

namespace troupe::http {

namespace {

using json = nlohmann::json;

void device_analysis(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    auto now = actors::now_ms();
    auto to = time_param(*c, "to", now);
    auto from = time_param(*c, "from", now - 86'400'000);
    if (!from || !to)
      return;
    if (*from > *to)
      return c->fail(api_error{400, "invalid_request",
                               "from must not be after to"});
    c->ask_entity(
      c->env().devices, *id, actors::get_analysis{who, *from, *to},
      [c](actors::analysis_reply& r) { c->reply(200, analysis_json(r)); });
  });
}

void alerts(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    actors::list_alerts req;
    req.who = who;
    if (auto s = c->query("state")) {
      if (*s != "open" && *s != "closed")
        return c->fail(api_error{400, "invalid_request",
                                 "state must be open or closed"});
      req.state = *s;
    }
    if (auto d = c->query("device")) {
      if (!valid_id(*d))
        return c->fail(api_error{400, "invalid_request",
                                 "device must be a device id"});
      req.device_id = *d;
    }
    if (!page_params(*c, 'a', req.limit, req.after))
      return;
    c->ask(c->env().alerts, req,
                               [c](actors::alert_page& r) {
                                 auto items = json::array();
                                 for (auto& a : r.items)
                                   items.push_back(alert_json(a));
                                 auto body = page_body(std::move(items),
                                                       r.next, 'a');
                                 if (r.partial)
                                   body["partial"] = true;
                                 c->reply(200, std::move(body));
                               });
  });
}

void close_alert(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    c->ask(c->env().alerts, actors::close_alert{who, *id},
                          [c](actors::alert& a) {
                            c->reply(200, alert_json(a));
                          });
  });
}

void rules(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    actors::list_rules req;
    req.who = who;
    if (!page_params(*c, 'r', req.limit, req.after))
      return;
    c->ask(c->env().alerts, req,
                              [c](actors::rule_page& r) {
                                auto items = json::array();
                                for (auto& rl : r.items)
                                  items.push_back(rule_json(rl));
                                c->reply(200, page_body(std::move(items),
                                                        r.next, 'r'));
                              });
  });
}

void create_rule(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto body = c->json_body();
    if (!body)
      return;
    auto spec = parse_rule(*body);
    if (auto e = std::get_if<api_error>(&spec))
      return c->fail(*e);
    c->ask(
      c->env().alerts,
      actors::create_rule{who, std::get<actors::rule>(std::move(spec))},
      [c](actors::rule& r) { c->reply(201, rule_json(r)); });
  });
}

void delete_rule(const call_ptr& c) {
  c->user([c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    c->ask(c->env().alerts, actors::delete_rule{who, *id},
                         [c](actors::done&) { c->reply(204, {}); });
  });
}

} // namespace

void add_analysis_routes(router& r) {
  r.add("GET", "/api/v1/devices/{id}/analysis", device_analysis);
  r.add("GET", "/api/v1/alerts", alerts);
  r.add("POST", "/api/v1/alerts/{id}/close", close_alert);
  r.add("GET", "/api/v1/rules", rules);
  r.add("POST", "/api/v1/rules", create_rule);
  r.add("DELETE", "/api/v1/rules/{id}", delete_rule);
}

} // namespace troupe::http
