// The admin side of API.md: tenants, users (and their passwords), device
// registration, renaming, secret rotation, deletion. Roles are checked by the actors; the edge only
// authenticates.

#include "http/routes.hpp"

#include <caf/all.hpp>

#include "http/call.hpp"
#include "http/pages.hpp"
#include "http/parse.hpp"
#include "http/render.hpp"

namespace troupe::http {

namespace {

using json = nlohmann::json;

/// Runs `k` with the caller when the request is authenticated.
template <class F>
void as_user(const call_ptr& c, F k) {
  c->user([c, k](const actors::caller& who) { k(who); });
}

void create_tenant(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto body = c->json_body();
    if (!body)
      return;
    auto id = body->is_object() ? body->find("id") : body->end();
    if (id == body->end() || !id->is_string()
        || !valid_id(id->get<std::string>()))
      return c->fail(api_error{400, "invalid_request",
                               "id is required ([A-Za-z0-9_.:-]{1,64})"});
    actors::tenant_info t{id->get<std::string>(), id->get<std::string>(), 0};
    if (auto n = body->find("name"); n != body->end()) {
      if (!n->is_string() || n->get<std::string>().size() > 256)
        return c->fail(api_error{400, "invalid_request",
                                 "name must be a string (at most 256)"});
      t.name = n->get<std::string>();
    }
    c->ask(
      c->env().admin, actors::create_tenant{who, t},
      [c](actors::tenant_info& r) { c->reply(201, tenant_json(r)); });
  });
}

void list_tenants(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    c->ask(
      c->env().admin, actors::list_tenants{who},
      [c](actors::tenant_list& r) {
        auto items = json::array();
        for (auto& t : r.items)
          items.push_back(tenant_json(t));
        c->reply(200, {{"items", items}, {"next_cursor", nullptr}});
      });
  });
}

void create_user(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto body = c->json_body();
    if (!body)
      return;
    auto req = parse_create_user(*body);
    if (auto e = std::get_if<api_error>(&req))
      return c->fail(*e);
    auto& msg = std::get<actors::create_user>(req);
    msg.who = who;
    c->ask(
      c->env().admin, msg,
      [c](actors::user_record& r) { c->reply(201, user_json(r)); });
  });
}

void list_users(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    actors::list_users lu{who, "", 100};
    if (!page_params(*c, 'u', lu.limit, lu.after))
      return;
    c->ask(c->env().admin, lu,
                              [c](actors::user_list& r) {
                                auto items = json::array();
                                for (auto& u : r.items)
                                  items.push_back(user_json(u));
                                c->reply(200, page_body(std::move(items),
                                                        r.next, 'u'));
                              });
  });
}

void delete_user(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto name = c->id_param();
    if (!name)
      return;
    c->ask(c->env().admin,
                         actors::delete_user{who, *name},
                         [c](actors::done&) { c->reply(204, {}); });
  });
}

void set_user_password(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto name = c->id_param();
    if (!name)
      return;
    auto body = c->json_body();
    if (!body)
      return;
    auto pw = parse_password(*body, "password");
    if (auto e = std::get_if<api_error>(&pw))
      return c->fail(*e);
    c->ask(c->env().admin,
           actors::set_user_password{who, *name, std::get<std::string>(pw)},
           [c](actors::done&) { c->reply(200, {{"ok", true}}); });
  });
}

void register_devices(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto body = c->json_body();
    if (!body)
      return;
    bool bulk = false;
    auto specs = parse_device_specs(*body, bulk);
    if (auto e = std::get_if<api_error>(&specs))
      return c->fail(*e);
    actors::register_devices req{
      who, std::move(std::get<std::vector<actors::new_device_spec>>(specs))};
    c->ask(
      c->env().admin, std::move(req),
      [c, bulk](actors::device_secrets& r) {
        auto out = json::array();
        for (auto& s : r.items)
          out.push_back({{"id", s.id},
                         {"name", s.name},
                         {"tenant", s.tenant},
                         {"secret", s.secret}});
        c->reply(201, bulk ? out : out[0]);
      },
      std::chrono::milliseconds(120'000));
  });
}

void rotate_secret(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    c->ask(
      c->env().admin, actors::rotate_secret{who, *id},
      [c](actors::device_secret& r) {
        c->reply(200, {{"id", r.id}, {"secret", r.secret}});
      });
  });
}

void update_device(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    auto body = c->json_body();
    if (!body)
      return;
    auto change = parse_device_patch(*body);
    if (auto e = std::get_if<api_error>(&change))
      return c->fail(*e);
    auto& req = std::get<actors::update_device>(change);
    req.who = who;
    req.id = *id;
    c->ask(c->env().admin, std::move(req),
           [c, who, id = *id](actors::done&) {
             // The live actor reloaded: it answers with the change.
             c->ask_entity(c->env().devices, id, actors::get_device{who},
                           [c](actors::device_view& v) {
                             c->reply(200, device_json(v, true));
                           });
           });
  });
}

void delete_device(const call_ptr& c) {
  as_user(c, [c](const actors::caller& who) {
    auto id = c->id_param();
    if (!id)
      return;
    c->ask(c->env().admin,
                         actors::delete_device{who, *id},
                         [c](actors::done&) { c->reply(204, {}); });
  });
}

} // namespace

void add_admin_routes(router& r) {
  r.add("POST", "/api/v1/admin/tenants", create_tenant);
  r.add("GET", "/api/v1/admin/tenants", list_tenants);
  r.add("POST", "/api/v1/admin/users", create_user);
  r.add("GET", "/api/v1/admin/users", list_users);
  r.add("DELETE", "/api/v1/admin/users/{username}", delete_user);
  r.add("POST", "/api/v1/admin/users/{username}/password", set_user_password);
  r.add("POST", "/api/v1/admin/devices", register_devices);
  r.add("POST", "/api/v1/admin/devices/{id}/rotate-secret", rotate_secret);
  r.add("PATCH", "/api/v1/admin/devices/{id}", update_device);
  r.add("DELETE", "/api/v1/admin/devices/{id}", delete_device);
}

} // namespace troupe::http
