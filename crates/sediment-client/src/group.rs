//! Consumer group administration: list the groups of a cluster and describe one group (members,
//! their assignments, committed offsets and lag per partition), like `kafka-consumer-groups.sh`.
//!
//! The group's coordinator is found with FindCoordinator; ListGroups asks every broker.
//! Assignments of "consumer" groups are decoded from the consumer protocol; the lag of a
//! partition is its high watermark minus the committed offset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{ConsumerProtocolAssignment, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, OffsetFetchRequest};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::conn::{Client, Connection};
use crate::consumer::{LATEST_TIMESTAMP, list_offsets};
use crate::error::{Error, Result};

/// A group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group: String,
    /// Protocol type ("consumer" for consumer groups, empty for offset-only groups).
    pub protocol_type: String,
    /// State, e.g. "Stable" (empty if the broker does not report it).
    pub state: String,
}

/// A member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// Static membership id, if any.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host as the broker saw it.
    pub host: String,
    /// Assigned partitions by topic (consumer protocol; empty while the group rebalances).
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// One partition's committed offset and lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset (-1: none).
    pub committed: i64,
    /// High watermark (-1 if unknown).
    pub end: i64,
    /// `end - committed` when both are known.
    pub lag: Option<i64>,
    /// Member the partition is assigned to, if any.
    pub member: Option<String>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group: String,
    /// State, e.g. "Stable".
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Selected protocol (assignor), when Stable.
    pub protocol: String,
    /// Coordinator node id.
    pub coordinator: i32,
    /// Members.
    pub members: Vec<GroupMember>,
    /// Committed offsets and lag, by topic and partition.
    pub partitions: Vec<PartitionLag>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// Decodes a consumer protocol assignment (any version this client knows).
pub fn decode_assignment(bytes: &Bytes) -> Option<BTreeMap<String, Vec<i32>>> {
    if bytes.len() < 2 {
        return None;
    }
    let mut b = bytes.clone();
    let version = b.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut b, version).ok()?;
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in a.assigned_partitions {
        let mut parts = tp.partitions;
        parts.sort_unstable();
        out.entry(tp.topic.0.to_string()).or_default().extend(parts);
    }
    Some(out)
}

/// Consumer group administration through `client`.
pub struct GroupAdmin {
    client: Arc<Client>,
}

impl GroupAdmin {
    /// Group administration through `client`.
    pub fn new(client: Arc<Client>) -> Self {
        GroupAdmin { client }
    }

    /// The coordinator of `group` and a connection to it.
    pub async fn coordinator(&self, group: &str) -> Result<(i32, Arc<Connection>)> {
        let conn = self.client.bootstrap_connection().await?;
        let version = conn.version(kafka_protocol::messages::ApiKey::FindCoordinator)?;
        let req = if version >= 4 {
            FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![sb(group)])
        } else {
            FindCoordinatorRequest::default().with_key(sb(group))
        };
        let resp = conn.send(&req).await?;
        let (code, node, msg) = match resp.coordinators.first() {
            Some(c) => (c.error_code, c.node_id.0, c.error_message.as_ref().map(|m| m.to_string())),
            None => (resp.error_code, resp.node_id.0, resp.error_message.as_ref().map(|m| m.to_string())),
        };
        if code != 0 {
            return Err(Error::broker(format!("cannot find the coordinator of group \"{group}\""), code, msg.as_deref()));
        }
        Ok((node, self.client.node_connection(node).await?))
    }

    /// Every group of every broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.client.metadata(Some(&[])).await?;
        let mut nodes: Vec<i32> = self.client.brokers().keys().copied().collect();
        nodes.sort_unstable();
        let mut out = Vec::new();
        for node in nodes {
            let conn = self.client.node_connection(node).await?;
            let resp = conn.send(&ListGroupsRequest::default()).await?;
            if resp.error_code != 0 {
                return Err(Error::broker("cannot list groups", resp.error_code, None));
            }
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out.dedup_by(|a, b| a.group == b.group);
        Ok(out)
    }

    /// Members, assignments, committed offsets and lag of `group`.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let (node, conn) = self.coordinator(group).await?;
        let resp = conn.send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))])).await?;
        let d = resp.groups.into_iter().next().ok_or_else(|| Error::protocol(conn.addr(), "empty DescribeGroups response"))?;
        if d.error_code == ResponseError::GroupIdNotFound.code() || (d.error_code == 0 && d.group_state.as_str() == "Dead") {
            return Err(Error::broker(format!("group \"{group}\" does not exist"), ResponseError::GroupIdNotFound.code(), None));
        }
        if d.error_code != 0 {
            return Err(Error::broker(format!("cannot describe group \"{group}\""), d.error_code, d.error_message.as_deref()));
        }
        let members: Vec<GroupMember> = d
            .members
            .iter()
            .map(|m| GroupMember {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: if d.protocol_type.as_str() == "consumer" { decode_assignment(&m.member_assignment).unwrap_or_default() } else { BTreeMap::new() },
            })
            .collect();
        // committed offsets (all of them)
        let version = conn.version(kafka_protocol::messages::ApiKey::OffsetFetch)?;
        let req = if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(GroupId(sb(group))).with_topics(None)])
        } else {
            OffsetFetchRequest::default().with_group_id(GroupId(sb(group))).with_topics(None)
        };
        let resp = conn.send(&req).await?;
        let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
        if version >= 8 {
            for g in resp.groups {
                if g.error_code != 0 {
                    return Err(Error::broker(format!("cannot fetch the offsets of group \"{group}\""), g.error_code, None));
                }
                for t in g.topics {
                    for p in t.partitions {
                        committed.insert((t.name.0.to_string(), p.partition_index), p.committed_offset);
                    }
                }
            }
        } else {
            if resp.error_code != 0 {
                return Err(Error::broker(format!("cannot fetch the offsets of group \"{group}\""), resp.error_code, None));
            }
            for t in resp.topics {
                for p in t.partitions {
                    committed.insert((t.name.0.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
        // every partition committed or assigned
        let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
        for m in &members {
            for (t, ps) in &m.assignment {
                for p in ps {
                    owner.insert((t.clone(), *p), m.member_id.clone());
                }
            }
        }
        let keys: BTreeSet<(String, i32)> = committed.keys().chain(owner.keys()).cloned().collect();
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in &keys {
            by_topic.entry(t.clone()).or_default().push(*p);
        }
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for (t, ps) in &by_topic {
            match list_offsets(&self.client, t, ps, LATEST_TIMESTAMP).await {
                Ok(m) => ends.extend(m.into_iter().map(|(p, o)| ((t.clone(), p), o))),
                Err(e) => tracing::debug!(topic = %t, error = %e, "cannot read end offsets"),
            }
        }
        let partitions = keys
            .into_iter()
            .map(|k| {
                let c = committed.get(&k).copied().unwrap_or(-1);
                let end = ends.get(&k).copied().unwrap_or(-1);
                PartitionLag {
                    topic: k.0.clone(),
                    partition: k.1,
                    committed: c,
                    end,
                    lag: (c >= 0 && end >= 0).then(|| (end - c).max(0)),
                    member: owner.get(&k).cloned(),
                }
            })
            .collect();
        Ok(GroupDescription {
            group: group.to_string(),
            state: d.group_state.to_string(),
            protocol_type: d.protocol_type.to_string(),
            protocol: d.protocol_data.to_string(),
            coordinator: node,
            members,
            partitions,
        })
    }
}

/// The text `sediment group describe` prints.
pub fn render_description(d: &GroupDescription) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let proto = match (d.protocol_type.as_str(), d.protocol.as_str()) {
        ("", _) => "-".to_string(),
        (t, "") => t.to_string(),
        (t, p) => format!("{t}/{p}"),
    };
    let _ = writeln!(s, "group {}  state {}  protocol {}  coordinator {}  members {}", d.group, d.state, proto, d.coordinator, d.members.len());
    if !d.members.is_empty() {
        let _ = writeln!(s);
        let rows: Vec<[String; 5]> = d
            .members
            .iter()
            .map(|m| {
                let asg = if m.assignment.is_empty() {
                    "-".to_string()
                } else {
                    m.assignment
                        .iter()
                        .map(|(t, ps)| format!("{t}:{}", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                [m.member_id.clone(), m.instance_id.clone().unwrap_or_else(|| "-".into()), m.client_id.clone(), m.host.clone(), asg]
            })
            .collect();
        table(&mut s, ["MEMBER", "INSTANCE", "CLIENT", "HOST", "ASSIGNMENT"], &rows);
    }
    if !d.partitions.is_empty() {
        let _ = writeln!(s);
        let rows: Vec<[String; 6]> = d
            .partitions
            .iter()
            .map(|p| {
                let opt = |v: i64| if v >= 0 { v.to_string() } else { "-".into() };
                [
                    p.topic.clone(),
                    p.partition.to_string(),
                    opt(p.committed),
                    opt(p.end),
                    p.lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                    p.member.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(&mut s, ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"], &rows);
    }
    s
}

fn table<const N: usize>(s: &mut String, header: [&str; N], rows: &[[String; N]]) {
    use std::fmt::Write;
    let mut widths: [usize; N] = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string();
    let _ = writeln!(s, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(s, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn assignments_decode_from_the_consumer_protocol() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default().with_topic(TopicName(sb("t"))).with_partitions(vec![3, 1]),
            TopicPartition::default().with_topic(TopicName(sb("u"))).with_partitions(vec![0]),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        a.encode(&mut buf, 1).unwrap();
        let got = decode_assignment(&buf.freeze()).unwrap();
        assert_eq!(got.get("t"), Some(&vec![1, 3]));
        assert_eq!(got.get("u"), Some(&vec![0]));
        assert_eq!(decode_assignment(&Bytes::new()), None);
    }

    #[test]
    fn description_renders_as_tables() {
        let d = GroupDescription {
            group: "g".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            coordinator: 1,
            members: vec![GroupMember {
                member_id: "m-1".into(),
                instance_id: None,
                client_id: "c".into(),
                host: "/127.0.0.1".into(),
                assignment: BTreeMap::from([("t".to_string(), vec![0, 1])]),
            }],
            partitions: vec![PartitionLag { topic: "t".into(), partition: 0, committed: 5, end: 9, lag: Some(4), member: Some("m-1".into()) }],
        };
        let s = render_description(&d);
        assert!(s.contains("state Stable  protocol consumer/range"), "{s}");
        assert!(s.contains("t:0,1"), "{s}");
        let row = s.lines().find(|l| l.starts_with("t  ")).unwrap();
        assert_eq!(row.split_whitespace().collect::<Vec<_>>(), vec!["t", "0", "5", "9", "4", "m-1"]);
    }
}
