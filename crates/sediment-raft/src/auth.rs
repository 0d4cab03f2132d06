//! Peer authentication on the Raft port: brokers prove they hold the cluster secret before a
//! single frame is read, and never send the secret itself.
//!
//! ```text
//!  client (dialling broker)                         server (raft listener)
//!  "SDRA" | version 1 | client nonce (32)   ───▶   (37 bytes, nothing else is read)
//!                                           ◀───   server nonce (32) | HMAC(K, "server", cn, sn)
//!  checks the server's MAC (a stranger's listener cannot produce it)
//!  HMAC(K, "client", cn, sn)                ───▶   checks it in constant time; closes on mismatch
//!  ... frames ...
//! ```
//!
//! K is HMAC-SHA256 keyed by the secret. Both nonces are fresh random values, so a recorded
//! exchange cannot be replayed, and the two directions use different labels, so one side's
//! proof can never be reflected back as the other's. The secret stays on the brokers; a peer
//! without it learns nothing from the exchange but two random nonces and one MAC over them.
//! This is membership, not encryption: the frames that follow travel in the clear (TLS between
//! brokers is the security work's part).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAGIC: &[u8; 4] = b"SDRA";
const VERSION: u8 = 1;
const NONCE: usize = 32;
const MAC: usize = 32;
/// What an unauthenticated peer may send: exactly the hello.
pub const HELLO_LEN: usize = 4 + 1 + NONCE;
/// How long a handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest secret accepted (bytes).
pub const MIN_SECRET_LEN: usize = 16;

/// The cluster secret every broker of a cluster shares, and the id of the cluster this broker
/// belongs to once it knows it (shared by every clone: set once, seen by both the listener and
/// the dialling side). Two clusters that share a secret by mistake still refuse each other's
/// brokers: see [`crate::transport`]'s identity exchange.
#[derive(Clone)]
pub struct ClusterKey {
    secret: std::sync::Arc<[u8]>,
    cluster_id: std::sync::Arc<std::sync::RwLock<String>>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("i/o during the peer handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer handshake timed out")]
    TimedOut,
    #[error("not a sediment raft peer (bad hello)")]
    BadHello,
    #[error("peer does not hold the cluster secret")]
    BadProof,
}

impl ClusterKey {
    /// A key from the shared secret; refused if shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<ClusterKey, String> {
        let s = secret.as_ref();
        if s.len() < MIN_SECRET_LEN {
            return Err(format!("the cluster secret must be at least {MIN_SECRET_LEN} bytes, got {}", s.len()));
        }
        Ok(ClusterKey { secret: s.into(), cluster_id: Default::default() })
    }

    /// The id of this broker's cluster; empty until its metadata names one.
    pub fn cluster_id(&self) -> String {
        self.cluster_id.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this broker's cluster id is `id` (compared under the lock, without a copy: the
    /// peer transport asks on every call).
    pub fn cluster_id_is(&self, id: &str) -> bool {
        *self.cluster_id.read().unwrap_or_else(|e| e.into_inner()) == id
    }

    /// Records this broker's cluster id; whether it changed.
    pub fn set_cluster_id(&self, id: &str) -> bool {
        let mut cur = self.cluster_id.write().unwrap_or_else(|e| e.into_inner());
        if *cur == id {
            return false;
        }
        *cur = id.to_string();
        true
    }

    fn mac(&self, label: &[u8], client: &[u8], server: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("hmac takes keys of any length");
        m.update(b"sediment-raft ");
        m.update(label);
        m.update(client);
        m.update(server);
        m
    }

    /// The dialling side: proves membership to the listener and checks the listener's proof.
    pub async fn client_handshake<S: AsyncReadExt + AsyncWriteExt + Unpin>(&self, stream: &mut S) -> Result<(), AuthError> {
        let work = async {
            let cn: [u8; NONCE] = sediment_log::random::random();
            let mut hello = Vec::with_capacity(HELLO_LEN);
            hello.extend_from_slice(MAGIC);
            hello.push(VERSION);
            hello.extend_from_slice(&cn);
            stream.write_all(&hello).await?;
            let mut reply = [0u8; NONCE + MAC];
            stream.read_exact(&mut reply).await?;
            let (sn, server_mac) = reply.split_at(NONCE);
            self.mac(b"server", &cn, sn).verify_slice(server_mac).map_err(|_| AuthError::BadProof)?;
            let proof = self.mac(b"client", &cn, sn).finalize().into_bytes();
            stream.write_all(&proof).await?;
            Ok(())
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await.map_err(|_| AuthError::TimedOut)?
    }

    /// The listening side: reads exactly the hello, answers with its own proof, and accepts the
    /// peer only if its proof checks out. Nothing else is read before that.
    pub async fn server_handshake<S: AsyncReadExt + AsyncWriteExt + Unpin>(&self, stream: &mut S) -> Result<(), AuthError> {
        let work = async {
            let mut hello = [0u8; HELLO_LEN];
            stream.read_exact(&mut hello).await?;
            if &hello[..4] != MAGIC || hello[4] != VERSION {
                return Err(AuthError::BadHello);
            }
            let cn = &hello[5..];
            let sn: [u8; NONCE] = sediment_log::random::random();
            let mut reply = Vec::with_capacity(NONCE + MAC);
            reply.extend_from_slice(&sn);
            reply.extend_from_slice(&self.mac(b"server", cn, &sn).finalize().into_bytes());
            stream.write_all(&reply).await?;
            let mut proof = [0u8; MAC];
            stream.read_exact(&mut proof).await?;
            self.mac(b"client", cn, &sn).verify_slice(&proof).map_err(|_| AuthError::BadProof)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await.map_err(|_| AuthError::TimedOut)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(a: &ClusterKey, b: &ClusterKey) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (mut c, mut s) = tokio::io::duplex(1024);
        let (a, b) = (a.clone(), b.clone());
        let server = tokio::spawn(async move { b.server_handshake(&mut s).await });
        let client = a.client_handshake(&mut c).await;
        drop(c);
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn the_same_secret_passes_both_ways() {
        let k = ClusterKey::new("correct horse battery staple").unwrap();
        let (c, s) = pair(&k, &k).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    }

    #[tokio::test]
    async fn a_different_secret_fails_both_ways() {
        let a = ClusterKey::new("correct horse battery staple").unwrap();
        let b = ClusterKey::new("incorrect horse battery staple").unwrap();
        let (c, s) = pair(&a, &b).await;
        // the client refuses the listener's proof and hangs up: the listener never accepts
        assert!(matches!(c, Err(AuthError::BadProof)), "{c:?}");
        assert!(s.is_err(), "{s:?}");
    }

    #[tokio::test]
    async fn a_stranger_is_dropped_after_the_hello() {
        let k = ClusterKey::new("correct horse battery staple").unwrap();
        let (mut c, mut s) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { k.server_handshake(&mut s).await });
        // a raft frame instead of a hello
        c.write_all(&[0, 0, 0, 30, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(AuthError::BadHello)));
        // one that sends a hello but cannot prove anything
        let k = ClusterKey::new("correct horse battery staple").unwrap();
        let (mut c, mut s) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { k.server_handshake(&mut s).await });
        let mut hello = b"SDRA\x01".to_vec();
        hello.extend_from_slice(&[7u8; 32]);
        c.write_all(&hello).await.unwrap();
        let mut reply = [0u8; 64];
        c.read_exact(&mut reply).await.unwrap();
        c.write_all(&reply[32..]).await.unwrap(); // reflect the server's own proof
        assert!(matches!(server.await.unwrap(), Err(AuthError::BadProof)));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterKey::new("short").is_err());
    }
}
