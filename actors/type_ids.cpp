#include "actors/type_ids.hpp"

#include <caf/actor_system_config.hpp>

#include "actors/install.hpp"

namespace troupe::actors {

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<caller>("troupe.caller");
  cfg.add_message_type<command>("troupe.command");
  cfg.add_message_type<point>("troupe.point");
  cfg.add_message_type<device_login>("troupe.device_login");
  cfg.add_message_type<device_login_reply>("troupe.device_login_reply");
  cfg.add_message_type<telemetry>("troupe.telemetry");
  cfg.add_message_type<telemetry_reply>("troupe.telemetry_reply");
  cfg.add_message_type<poll_commands>("troupe.poll_commands");
  cfg.add_message_type<commands_reply>("troupe.commands_reply");
  cfg.add_message_type<cancel_poll>("troupe.cancel_poll");
  cfg.add_message_type<command_result>("troupe.command_result");
  cfg.add_message_type<latest_value>("troupe.latest_value");
  cfg.add_message_type<device_view>("troupe.device_view");
  cfg.add_message_type<get_device>("troupe.get_device");
  cfg.add_message_type<post_command>("troupe.post_command");
  cfg.add_message_type<cancel_command>("troupe.cancel_command");
  cfg.add_message_type<list_commands>("troupe.list_commands");
  cfg.add_message_type<command_page>("troupe.command_page");
  cfg.add_message_type<history>("troupe.history");
  cfg.add_message_type<history_reply>("troupe.history_reply");
  cfg.add_message_type<session_auth>("troupe.session_auth");
  cfg.add_message_type<user_info>("troupe.user_info");
  cfg.add_message_type<user_login>("troupe.user_login");
  cfg.add_message_type<user_login_reply>("troupe.user_login_reply");
  cfg.add_message_type<list_devices>("troupe.list_devices");
  cfg.add_message_type<device_page>("troupe.device_page");
  cfg.add_message_type<tenant_info>("troupe.tenant_info");
  cfg.add_message_type<create_tenant>("troupe.create_tenant");
  cfg.add_message_type<list_tenants>("troupe.list_tenants");
  cfg.add_message_type<tenant_list>("troupe.tenant_list");
  cfg.add_message_type<user_record>("troupe.user_record");
  cfg.add_message_type<create_user>("troupe.create_user");
  cfg.add_message_type<list_users>("troupe.list_users");
  cfg.add_message_type<user_list>("troupe.user_list");
  cfg.add_message_type<delete_user>("troupe.delete_user");
  cfg.add_message_type<new_device_spec>("troupe.new_device_spec");
  cfg.add_message_type<register_devices>("troupe.register_devices");
  cfg.add_message_type<device_secret>("troupe.device_secret");
  cfg.add_message_type<device_secrets>("troupe.device_secrets");
  cfg.add_message_type<rotate_secret>("troupe.rotate_secret");
  cfg.add_message_type<delete_device>("troupe.delete_device");
  cfg.add_message_type<update_device>("troupe.update_device");
  cfg.add_message_type<change_password>("troupe.change_password");
  cfg.add_message_type<set_user_password>("troupe.set_user_password");
  cfg.add_message_type<done>("troupe.done");
  cfg.add_message_type<alert>("troupe.alert");
  cfg.add_message_type<alert_page>("troupe.alert_page");
  cfg.add_message_type<analysis_reply>("troupe.analysis_reply");
  cfg.add_message_type<close_alert>("troupe.close_alert");
  cfg.add_message_type<create_rule>("troupe.create_rule");
  cfg.add_message_type<delete_rule>("troupe.delete_rule");
  cfg.add_message_type<get_analysis>("troupe.get_analysis");
  cfg.add_message_type<list_alerts>("troupe.list_alerts");
  cfg.add_message_type<list_rules>("troupe.list_rules");
  cfg.add_message_type<metric_analysis>("troupe.metric_analysis");
  cfg.add_message_type<rollup>("troupe.rollup");
  cfg.add_message_type<rule>("troupe.rule");
  cfg.add_message_type<rule_page>("troupe.rule_page");
}

} // namespace troupe::actors
