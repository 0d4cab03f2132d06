//! The Raft peer transport's decoders: the postcard bodies `network.rs` `RaftHandler::handle`
//! decodes for each request kind (with the metadata group's type config), the forwarded
//! metadata request `controller.rs` decodes, the answers a dialling broker decodes, the cluster
//! state a snapshot carries, and the peer handshake (`auth.rs`) a listener runs before it reads
//! a single frame.
//!
//! Input: `kind | payload`, as in a transport frame (whose group id only picks the handler).
//! The transport's kinds decode what `RaftHandler` decodes: 1 `AppendEntriesRequest`, 2
//! `VoteRequest`, 3 `InstallSnapshotRequest`, 4 a forwarded request, 6 `Campaign`, and for 7
//! (sync status, whose request carries nothing) the leader's answer. The other kinds pick the
//! rest: 0, 8, 9 the answers to append, vote (and campaign), snapshot; 5 a snapshot's
//! `ClusterState`; 10 the handshake, with the payload as all the dialler sends; 11 a
//! `MetaCommand`; 12 a voter's answer to `KIND_TERM` (its `VoterState`, which a replica
//! recovering from a lost disk decodes; the request carries nothing). Decoded metadata commands are applied to a small cluster state, as a follower
//! applies a leader's entries.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openraft::EntryPayload;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use sediment_raft::auth::{AuthError, HELLO_LEN};
use sediment_raft::network::{
    self, Campaign, KIND_APPEND, KIND_CAMPAIGN, KIND_CLIENT, KIND_SNAPSHOT, KIND_SYNC_STATUS, KIND_VOTE,
};
use sediment_raft::{BrokerRecord, ClusterKey, ClusterState, MetaCommand, MetaTc};
use tokio::io::AsyncWriteExt;

/// Kinds this target adds next to the transport's own (1, 2, 3, 4, 6 and 7).
const ANSWER_APPEND: u8 = 0;
const SNAPSHOT_STATE: u8 = 5;
const ANSWER_VOTE: u8 = 8;
const ANSWER_SNAPSHOT: u8 = 9;
const HANDSHAKE: u8 = 10;
const COMMAND: u8 = 11;
const ANSWER_TERM: u8 = 12;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else { return };
    match kind {
        KIND_APPEND => {
            if let Ok(req) = network::decode::<AppendEntriesRequest<MetaTc>>(payload) {
                let mut state = seeded_state().clone();
                for entry in &req.entries {
                    if let EntryPayload::Normal(cmd) = &entry.payload {
                        state.apply(cmd);
                    }
                }
            }
        }
        KIND_VOTE => {
            let _ = network::decode::<VoteRequest<u64>>(payload);
        }
        KIND_SNAPSHOT => {
            // a snapshot's data is the whole cluster state (the metadata group sends one chunk)
            if let Ok(req) = network::decode::<InstallSnapshotRequest<MetaTc>>(payload) {
                state_round_trip(&req.data);
            }
        }
        KIND_CLIENT => {
            let forwarded = sediment_raft::controller::fuzz_decode_forward(payload);
            // a forwarded write is variant 0 followed by the command
            if let Some((0, cmd)) = payload.split_first() {
                let command = network::decode::<MetaCommand>(cmd);
                assert_eq!(forwarded, command.is_ok(), "a forwarded write decodes exactly when its command does");
                if let Ok(cmd) = command {
                    command_round_trip(&cmd);
                    seeded_state().clone().apply(&cmd);
                }
            }
        }
        KIND_CAMPAIGN => {
            let _ = network::decode::<Campaign>(payload);
        }
        KIND_SYNC_STATUS => {
            // the leader's answer to `network::leader_applied`
            let _ = network::decode::<Option<u64>>(payload);
        }
        ANSWER_APPEND => {
            let _ = network::decode::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(payload);
        }
        ANSWER_VOTE => {
            let _ = network::decode::<Result<VoteResponse<u64>, RaftError<u64>>>(payload);
            let _ = network::decode::<bool>(payload); // a campaign's answer
        }
        ANSWER_SNAPSHOT => {
            let _ = network::decode::<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>>(payload);
        }
        SNAPSHOT_STATE => state_round_trip(payload),
        COMMAND => {
            if let Ok(cmd) = network::decode::<MetaCommand>(payload) {
                command_round_trip(&cmd);
                seeded_state().clone().apply(&cmd);
            }
        }
        HANDSHAKE => handshake(payload),
        ANSWER_TERM => {
            if let Ok(state) = network::decode::<network::VoterState>(payload) {
                let again = network::encode(&state).expect("encode a decoded voter state");
                assert_eq!(network::decode::<network::VoterState>(&again), Ok(state));
            }
        }
        _ => {}
    }
});

fn state_round_trip(bytes: &[u8]) {
    if let Ok(state) = network::decode::<ClusterState>(bytes) {
        let again = network::encode(&state).expect("encode a decoded state");
        assert_eq!(network::decode::<ClusterState>(&again).as_ref(), Ok(&state));
    }
}

fn command_round_trip(cmd: &MetaCommand) {
    let again = network::encode(cmd).expect("encode a decoded command");
    assert_eq!(network::decode::<MetaCommand>(&again).as_ref(), Ok(cmd));
}

/// Three brokers and two topics, so commands find something to act on.
fn seeded_state() -> &'static ClusterState {
    static STATE: OnceLock<ClusterState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(&MetaCommand::RegisterBroker(BrokerRecord {
                id,
                host: "127.0.0.1".into(),
                port: 9090 + id as u16,
                raft_addr: format!("127.0.0.1:{}", 9190 + id),
                rack: None,
            }));
        }
        for (i, name) in ["orders", "__consumer_offsets"].into_iter().enumerate() {
            s.apply(&MetaCommand::CreateTopic {
                name: name.into(),
                id: uuid::Uuid::from_bytes([i as u8 + 1; 16]),
                partitions: 3,
                replication_factor: 2,
                config: Default::default(),
                placement_start: 0,
                created_ms: 1_700_000_000_000,
            });
        }
        s
    })
}

/// The listener's side of the handshake, with the input as everything the dialler sends.
/// It must refuse (no input can prove the secret) for the right reason, and never panic.
fn handshake(sent: &[u8]) {
    static KEY: OnceLock<ClusterKey> = OnceLock::new();
    let key = KEY.get_or_init(|| ClusterKey::new("fuzzing-cluster-secret").expect("a long enough secret"));
    let result = runtime().block_on(async {
        // room for everything sent one way and the 64-byte answer the other
        let (mut dialler, mut listener) = tokio::io::duplex(sent.len().max(64) + 1);
        dialler.write_all(sent).await.expect("the pipe holds the input");
        dialler.shutdown().await.expect("end of the input");
        let r = key.server_handshake(&mut listener).await;
        drop(dialler);
        r
    });
    let good_hello = sent.len() >= HELLO_LEN && &sent[..5] == b"SDRA\x01";
    match result {
        Ok(()) => panic!("a handshake without the secret was accepted"),
        Err(AuthError::Io(_)) => assert!(!good_hello || sent.len() < HELLO_LEN + 32, "{result:?}"),
        Err(AuthError::BadHello) => assert!(sent.len() >= HELLO_LEN && !good_hello),
        Err(AuthError::BadProof) => assert!(good_hello && sent.len() >= HELLO_LEN + 32),
        Err(AuthError::TimedOut) => panic!("a handshake over a closed pipe timed out"),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime"))
}
