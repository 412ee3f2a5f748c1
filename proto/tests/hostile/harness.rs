//! A listening peer over real QUIC on 127.0.0.1 and a scripted peer that speaks to it frame by
//! frame, built on proto's frames, codec and messages: what the hostile peer of issue 10 did.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::common::TestReplica;
use botsync_engine::{
    AgentLabel, Attribution, ChunkerParams, EntryKind, FileEntry, Hash, MachineName, Mode, PeerId,
    RelPath, VersionVector,
};
use botsync_proto::budget::{Budget, Limits};
use botsync_proto::close::CloseCode;
use botsync_proto::codec::encode_unchecked;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::frame::{read_frame, write_frame};
use botsync_proto::identity::Identity;
use botsync_proto::messages::{Features, Hello, Message, SessionMode, WireEntry};
use botsync_proto::replica::Replica;
use botsync_proto::session::server::{ServeOptions, serve};
use botsync_proto::session::{NoProgress, SessionError, SessionOptions, SessionReport, client};
use botsync_proto::tls::AllowedPeers;

/// A listening peer serving one session per connection, and a dialing endpoint with its own
/// replica.
pub struct Server<R> {
    pub replica: Arc<R>,
    pub addr: SocketAddr,
    pub id: PeerId,
    pub client_id: PeerId,
    pub client: Endpoint,
    pub client_replica: Arc<TestReplica>,
    /// The listener's budget, shared by every connection it serves.
    pub budget: Budget,
    /// A second dialer, another allowed peer with a replica of its own: the honest peer that
    /// must still sync while the first one attacks.
    pub other: Endpoint,
    pub other_replica: Arc<TestReplica>,
    served: tokio::sync::mpsc::UnboundedReceiver<Result<(), String>>,
}

/// Listen with `make(server id, dialer id)` as the replica; the dialer's replica is a fresh
/// [`TestReplica`]. Connections are served one after another, under the default limits.
pub async fn listen<R: Replica>(make: impl FnOnce(PeerId, PeerId) -> Arc<R>) -> Server<R> {
    listen_with(Limits::DEFAULT, false, make).await
}

/// [`listen`] under `limits`, serving connections one after another or (`concurrent`) each on
/// its own task, as the daemon does.
pub async fn listen_with<R: Replica>(
    limits: Limits,
    concurrent: bool,
    make: impl FnOnce(PeerId, PeerId) -> Arc<R>,
) -> Server<R> {
    let server_identity = Identity::generate().unwrap();
    let client_identity = Identity::generate().unwrap();
    let other_identity = Identity::generate().unwrap();
    let (id, client_id) = (server_identity.peer_id(), client_identity.peer_id());
    let other_id = other_identity.peer_id();
    let replica = make(id, client_id);
    let served_replica = Arc::clone(&replica);
    let server = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        server_identity,
        [client_id, other_id].into_iter().collect::<AllowedPeers>(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let dialer = |identity| {
        Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            identity,
            AllowedPeers::new(),
        )
        .unwrap()
    };
    let (client, other) = (dialer(client_identity), dialer(other_identity));
    let budget = Budget::new(limits);
    let served_budget = budget.clone();
    let (tx, served) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let Ok(conn) = incoming.accept().await else {
                continue;
            };
            let (quinn, peer) = conn.into_parts();
            let opts = ServeOptions {
                name: "server".into(),
                streams: 4,
                budget: served_budget.clone(),
                features: botsync_proto::messages::Features::SUPPORTED,
            };
            let (tx, replica) = (tx.clone(), Arc::clone(&served_replica));
            let one = async move {
                let result = serve(quinn, peer, replica, opts).await;
                let _ = tx.send(result.map(|_| ()).map_err(|e| e.to_string()));
            };
            if concurrent {
                tokio::spawn(one);
            } else {
                one.await;
            }
        }
    });
    Server {
        replica,
        addr,
        id,
        client_id,
        client,
        client_replica: Arc::new(TestReplica::new(client_id)),
        budget,
        other,
        other_replica: Arc::new(TestReplica::new(other_id)),
        served,
    }
}

/// A listener over a plain test replica.
pub async fn listen_memory() -> Server<TestReplica> {
    listen(|id, _| Arc::new(TestReplica::new(id))).await
}

impl<R> Server<R> {
    /// A scripted peer: a fresh connection and its control stream.
    pub async fn script(&self) -> Script {
        let conn = self.client.connect(self.addr, self.id).await.unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Script {
            conn: conn.quinn().clone(),
            send,
            recv,
        }
    }

    /// A real session of the dialer's replica in `mode`.
    pub async fn session(&self, mode: SessionMode) -> Result<SessionReport, SessionError> {
        session_of(&self.client, self.addr, self.id, &self.client_replica, mode).await
    }

    /// A real session of the second (honest) dialer's replica in `mode`.
    pub async fn other_session(&self, mode: SessionMode) -> Result<SessionReport, SessionError> {
        session_of(&self.other, self.addr, self.id, &self.other_replica, mode).await
    }

    /// How the next served session ended.
    pub async fn served(&mut self) -> Result<(), String> {
        self.served.recv().await.unwrap()
    }
}

async fn session_of(
    endpoint: &Endpoint,
    addr: SocketAddr,
    id: PeerId,
    replica: &Arc<TestReplica>,
    mode: SessionMode,
) -> Result<SessionReport, SessionError> {
    let conn = endpoint.connect(addr, id).await.unwrap();
    let opts = SessionOptions::new(mode, "client");
    let result = client::run(&conn, id, Arc::clone(replica), &opts, Arc::new(NoProgress)).await;
    conn.close(match &result {
        Ok(_) => CloseCode::Done,
        Err(e) => e.close_code(),
    });
    result
}

/// The scripted side of one connection.
pub struct Script {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

impl Script {
    /// Send a valid message.
    pub async fn send(&mut self, m: &Message) {
        write_frame(&mut self.send, m).await.unwrap();
    }

    /// Send a message as it is, without the checks an honest sender makes.
    pub async fn send_unchecked(&mut self, m: &Message) {
        let payload = encode_unchecked(m).unwrap();
        self.send_raw(&payload).await;
    }

    /// Send `payload` as one frame.
    pub async fn send_raw(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.send.write_all(&frame).await.unwrap();
    }

    /// The next message on the control stream (`None` at its end, on a failure, or after 10 s
    /// without one: a test of a refusal must fail, not hang, when nothing is refused).
    pub async fn recv(&mut self) -> Option<Message> {
        let next = read_frame(&mut self.recv);
        tokio::time::timeout(std::time::Duration::from_secs(10), next)
            .await
            .ok()?
            .ok()
            .flatten()
    }

    /// Hello and Summary both ways, as an initiator in `mode` whose root differs from any.
    pub async fn open(&mut self, mode: SessionMode) {
        self.open_with(Features::SUPPORTED, mode).await;
    }

    /// [`Script::open`], offering only `features` in `Hello`.
    pub async fn open_with(&mut self, features: Features, mode: SessionMode) {
        let mut hello = Hello::current("script", AgentLabel::default());
        hello.features = features;
        self.send(&Message::Hello(hello)).await;
        self.send(&Message::Summary {
            root: Hash::of(b"a root nobody has"),
            files: 0,
            mode,
            skipped: 0,
        })
        .await;
        assert!(matches!(self.recv().await, Some(Message::Hello(_))));
        assert!(matches!(self.recv().await, Some(Message::Summary { .. })));
        // A sync or pull with mesh-config negotiated: the responder volunteers its mesh config.
        if features.contains(Features::MESH_CONFIG)
            && matches!(mode, SessionMode::Sync | SessionMode::Pull)
        {
            assert!(matches!(
                self.recv().await,
                Some(Message::MeshConfig { .. })
            ));
        }
    }

    /// End the session as an honest initiator does.
    pub async fn goodbye(mut self) {
        self.send(&Message::Goodbye).await;
        let _ = self.send.finish();
        let _ = self.send.stopped().await;
        self.conn.close(0u32.into(), b"done");
    }

    /// Ask for the entries of `paths`, as after a descent, and read the replies.
    pub async fn ask_entries(&mut self, paths: &[&str]) {
        let paths = paths.iter().map(|p| RelPath::new(p).unwrap()).collect();
        self.send(&Message::GetEntries { paths }).await;
        loop {
            match self.recv().await {
                Some(Message::Entries { last: true, .. }) => return,
                Some(Message::Entries { .. }) => {}
                other => panic!("expected entries, got {other:?}"),
            }
        }
    }

    /// The close code the connection ends with, if it closes within `secs` seconds.
    pub async fn closed_within(&self, secs: u64) -> Option<CloseCode> {
        closed_within(&self.conn, secs).await
    }

    /// The close code the connection ends with (`None` if it is still open after 10 s).
    pub async fn closed(&self) -> Option<CloseCode> {
        self.closed_within(10).await
    }
}

/// The close code `conn` ends with, if it closes within `secs` seconds.
pub async fn closed_within(conn: &quinn::Connection, secs: u64) -> Option<CloseCode> {
    let closed = conn.closed();
    match tokio::time::timeout(std::time::Duration::from_secs(secs), closed).await {
        Ok(reason) => CloseCode::of_error(&reason),
        Err(_) => None,
    }
}

/// A tombstone of `path` by `author` with the given vector: an entry that needs no chunks.
pub fn tombstone(path: &str, author: PeerId, version: &[(PeerId, u64)]) -> WireEntry {
    WireEntry::inline(FileEntry {
        path: RelPath::new(path).unwrap(),
        kind: EntryKind::Tombstone,
        size: 0,
        mtime_ns: 2_000_000_000,
        mode: Mode::default(),
        content: Hash::ZERO,
        chunks: Vec::new(),
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::from_pairs(version.iter().copied()),
        parent: None,
        changed_by: Attribution {
            peer: author,
            agent: AgentLabel::new("script"),
            machine: MachineName::default(),
        },
    })
}

/// The version vector `replica` holds for `path`.
pub fn version_of(replica: &dyn Replica, path: &str) -> VersionVector {
    replica
        .entries(&[RelPath::new(path).unwrap()])
        .unwrap()
        .pop()
        .map(|e| e.version)
        .unwrap_or_default()
}
