//! openraft's own storage conformance suite against the metadata group's log store and state
//! machine (file-backed, in a fresh temp dir per test).

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use sediment_raft::MetaTc;
use sediment_raft::controller::MetaStateMachine;
use sediment_raft::log_store::FileLogStore;

struct Builder;

impl StoreBuilder<MetaTc, FileLogStore<MetaTc>, MetaStateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, FileLogStore<MetaTc>, MetaStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLogStore::open(dir.path()).unwrap();
        let sm = MetaStateMachine::open(dir.path()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
#[allow(clippy::result_large_err)] // openraft's own error type
fn openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::<MetaTc, FileLogStore<MetaTc>, MetaStateMachine, Builder, tempfile::TempDir>::test_all(Builder)
}
