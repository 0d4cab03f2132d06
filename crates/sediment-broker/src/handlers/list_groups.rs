//! ListGroups: every group this node coordinates, optionally filtered by state (v4+, case
//! insensitive) and type (v5+; every Sediment group is "classic").

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::sb;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    let states: Vec<String> = if version >= 4 { req.states_filter.iter().map(|s| s.trim().to_lowercase()).collect() } else { Vec::new() };
    let types: Vec<String> = if version >= 5 { req.types_filter.iter().map(|s| s.trim().to_lowercase()).collect() } else { Vec::new() };
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return r;
    }
    let mut groups = Vec::new();
    for shard in broker.groups.all_shards() {
        let st = shard.lock();
        for g in st.groups.iter() {
            let state = g.state().as_str();
            if !states.is_empty() && !states.iter().any(|s| *s == state.to_lowercase()) {
                continue;
            }
            let mut lg = ListedGroup::default();
            lg.group_id = GroupId(sb(g.id.clone()));
            lg.protocol_type = sb(g.protocol_type().unwrap_or_default());
            if version >= 4 {
                lg.group_state = sb(state);
            }
            if version >= 5 {
                lg.group_type = sb("classic");
            }
            groups.push(lg);
        }
    }
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    r.groups = groups;
    r
}
