//! DescribeGroups: state, protocol and members of each group. Member metadata and assignments
//! are included only while the group is Stable, as Kafka does. An unknown group is "Dead" with no
//! error before v6 and GROUP_ID_NOT_FOUND from v6 (KIP-1043).

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;
use crate::group::state::GroupState;

/// READ | DELETE | DESCRIBE: what a group allows when no authorizer is configured.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

fn not_found(id: kafka_protocol::messages::GroupId, version: i16) -> DescribedGroup {
    let mut d = DescribedGroup::default();
    d.group_state = sb(GroupState::Dead.as_str());
    if version >= 6 {
        d.error_code = ErrorCode::GroupIdNotFound.code();
        d.error_message = Some(sb(format!("Group {} not found.", id.0)));
    }
    d.group_id = id;
    d
}

pub fn handle(broker: &Arc<Broker>, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for id in req.groups {
        let group = id.0.to_string();
        let shard = match broker.groups.shard_for(broker, &group, false) {
            Ok(Some(s)) => s,
            Ok(None) => {
                r.groups.push(not_found(id, version));
                continue;
            }
            Err(code) => {
                let mut d = DescribedGroup::default();
                d.group_id = id;
                d.error_code = code.code();
                r.groups.push(d);
                continue;
            }
        };
        let st = shard.lock();
        let Some(g) = st.groups.get(&group) else {
            r.groups.push(not_found(id, version));
            continue;
        };
        let mut d = DescribedGroup::default();
        d.group_id = id;
        d.group_state = sb(g.state().as_str());
        d.protocol_type = sb(g.protocol_type().unwrap_or_default());
        let stable = g.state() == GroupState::Stable;
        let protocol = g.protocol_name().unwrap_or_default().to_string();
        if stable {
            d.protocol_data = sb(protocol.clone());
        }
        d.members = g
            .members()
            .map(|m| {
                let mut dm = DescribedGroupMember::default();
                dm.member_id = sb(m.id.clone());
                if version >= 4 {
                    dm.group_instance_id = m.instance_id.clone().map(sb);
                }
                dm.client_id = sb(m.client_id.clone());
                dm.client_host = sb(m.client_host.clone());
                if stable {
                    dm.member_metadata = m.protocols.iter().find(|p| p.name == protocol).map(|p| p.metadata.clone()).unwrap_or_default();
                    dm.member_assignment = m.assignment.clone();
                }
                dm
            })
            .collect();
        if version >= 3 && req.include_authorized_operations {
            d.authorized_operations = GROUP_OPERATIONS;
        }
        r.groups.push(d);
    }
    r
}
