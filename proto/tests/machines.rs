//! One session machine against a scripted peer, without sockets: the initiator or the responder
//! over a real workspace (`common/replica.rs`), the other side's messages written by hand. Each
//! test is a peer that breaks a rule, and what the machine does about it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use botsync_engine::plan::{Action, ItemReport, Outcome};
use botsync_engine::{Hash, PeerId, RelPath};
use botsync_proto::close::CloseCode;
use botsync_proto::messages::{
    ErrorCode, Features, Hello, Message, NodeReply, SessionMode, WireEntry, WireReport,
};
use botsync_proto::replica::Replica;
use botsync_proto::session::initiator::Initiator;
use botsync_proto::session::responder::Responder;
use botsync_proto::session::work::{self, Io, Transfer, Transferred};
use botsync_proto::session::{SessionError, SessionOptions};
use common::TestReplica;

const SERVER: PeerId = PeerId([0x5e; 32]);
const LAPTOP: PeerId = PeerId([0x1a; 32]);

/// Carry out what `ini` asks on `replica` until it waits for the peer; the messages it sent.
fn until_read(ini: &mut Initiator, replica: &TestReplica) -> Vec<Message> {
    let mut sent = Vec::new();
    while let Some(io) = ini.poll() {
        match io {
            Io::Send(m) => sent.push(m),
            Io::Exchange(requests) => {
                sent.extend(requests);
                break;
            }
            Io::Recv(_) => break,
            Io::Need(need) => ini
                .on_answer(work::execute(replica, need).unwrap())
                .unwrap(),
            Io::Transfer(Transfer::Complete(wire)) => {
                let full = wire.into_iter().map(|w| w.file.into()).collect();
                ini.on_transfer(Transferred::Completed(full)).unwrap();
            }
            Io::Transfer(Transfer::FetchAndApply(_)) => panic!("nothing to fetch here"),
            Io::Advertise(..) | Io::Progress(_) => {}
            Io::Refuse { .. } => panic!("the initiator refuses nothing"),
        }
    }
    sent
}

/// A laptop with one note, in a push session with a scripted server up to the point where the
/// server has answered the entries (it has none): the initiator has just offered its note.
fn offered() -> (Initiator, TestReplica) {
    let laptop = TestReplica::new(LAPTOP);
    laptop.write("memory/a.md", b"a note\n");
    let mut opts = SessionOptions::new(SessionMode::Push, "laptop");
    opts.features = Features::ZSTD.union(Features::CHUNK_TREE);
    let mut ini = Initiator::new(SERVER, opts);
    let sent = until_read(&mut ini, &laptop);
    assert_eq!(kinds(&sent), ["hello", "summary"]);
    let hello = Hello::current("server", Default::default());
    assert!(ini.on_message(Message::Hello(hello)).unwrap());
    until_read(&mut ini, &laptop);
    ini.on_message(summary(SessionMode::Push)).unwrap();
    let sent = until_read(&mut ini, &laptop);
    assert_eq!(kinds(&sent), ["get-nodes"]);
    let empty_root = Message::Nodes {
        nodes: vec![NodeReply {
            path: RelPath::root(),
            children: Vec::new(),
        }],
    };
    assert!(ini.on_message(empty_root).unwrap());
    let sent = until_read(&mut ini, &laptop);
    assert_eq!(kinds(&sent), ["get-entries"]);
    let none = Message::Entries {
        entries: Vec::new(),
        last: true,
    };
    assert!(ini.on_message(none).unwrap());
    let sent = until_read(&mut ini, &laptop);
    assert_eq!(kinds(&sent), ["offer"]);
    (ini, laptop)
}

fn summary(mode: SessionMode) -> Message {
    Message::Summary {
        root: Hash::ZERO,
        files: 0,
        mode,
        skipped: 0,
    }
}

fn kinds(sent: &[Message]) -> Vec<&'static str> {
    sent.iter().map(Message::kind).collect()
}

fn result(path: &str) -> WireReport {
    WireReport::from(ItemReport {
        path: RelPath::new(path).unwrap(),
        action: Action::Take,
        outcome: Outcome::Done,
        size: 1,
        bytes_fetched: 1,
        conflict_copy: None,
        changed_by: None,
        mtime_ns: 0,
    })
}

#[test]
fn the_offer_results_answer_only_the_offered_paths_once() {
    let (mut ini, _laptop) = offered();
    let never = Message::OfferResult {
        items: vec![result("USER.md")],
        last: true,
    };
    let err = ini.on_message(never).unwrap_err();
    assert!(
        matches!(&err, SessionError::Protocol(why) if why.contains("USER.md")),
        "{err}"
    );

    let (mut ini, laptop) = offered();
    let once = Message::OfferResult {
        items: vec![result("memory/a.md")],
        last: false,
    };
    assert!(ini.on_message(once.clone()).unwrap());
    until_read(&mut ini, &laptop);
    let err = ini.on_message(once).unwrap_err();
    assert!(err.to_string().contains("already answered"), "{err}");
}

#[test]
fn a_refused_offer_says_why_and_other_errors_name_their_code() {
    let (mut ini, _laptop) = offered();
    let refused = Message::Error {
        code: ErrorCode::Refused,
        message: "this push would delete 20 of 20 files".into(),
    };
    let err = ini.on_message(refused).unwrap_err();
    assert!(
        matches!(err, SessionError::Refused(ref m) if m.contains("delete")),
        "{err}"
    );

    let (mut ini, _laptop) = offered();
    let internal = Message::Error {
        code: ErrorCode::Internal,
        message: "disk full on server".into(),
    };
    let err = ini.on_message(internal).unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Remote {
                code: ErrorCode::Internal,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_elided_chunk_list_without_chunk_tree_is_a_bad_message_before_any_request() {
    let laptop = TestReplica::new(LAPTOP);
    laptop.write("memory/a.md", b"ours\n");
    let mut opts = SessionOptions::new(SessionMode::Pull, "laptop");
    opts.features = Features::ZSTD;
    let mut ini = Initiator::new(SERVER, opts);
    until_read(&mut ini, &laptop);
    ini.on_message(Message::Hello(Hello::current("server", Default::default())))
        .unwrap();
    until_read(&mut ini, &laptop);
    ini.on_message(summary(SessionMode::Pull)).unwrap();
    until_read(&mut ini, &laptop);
    ini.on_message(Message::Nodes {
        nodes: vec![NodeReply {
            path: RelPath::root(),
            children: Vec::new(),
        }],
    })
    .unwrap();
    until_read(&mut ini, &laptop);
    let theirs = laptop
        .entries(&[RelPath::new("memory/a.md").unwrap()])
        .unwrap()
        .remove(0);
    let elided = Message::Entries {
        entries: vec![WireEntry::new(theirs, 0)],
        last: true,
    };
    let err = ini.on_message(elided).unwrap_err();
    assert_eq!(err.close_code(), CloseCode::BadMessage, "{err}");
    assert!(err.to_string().contains("CHUNK_TREE"), "{err}");
    assert!(
        ini.poll().is_none(),
        "no chunk-tree request goes out for it"
    );
}

/// A hostile initiator, scripted against the responder: an offer in a session whose summary
/// said pull ends it with `Error(UnexpectedMessage)` and a `protocol-error` close, before the
/// replica is asked anything about the offer.
#[test]
fn an_offer_in_a_pull_session_is_refused_by_the_responder() {
    let server = TestReplica::new(SERVER);
    let mut r = Responder::new(LAPTOP, "server", Features::SUPPORTED);
    let hello = Hello::current("evil", Default::default());
    r.on_message(Message::Hello(hello)).unwrap();
    assert!(matches!(r.poll(), Some(Io::Send(Message::Hello(_)))));
    assert!(matches!(r.poll(), Some(Io::Recv(_))));
    r.on_message(summary(SessionMode::Pull)).unwrap();
    // Our summary, then (a pull) our mesh config volunteered, then the next request is read.
    let mut sent = Vec::new();
    while let Some(io) = r.poll() {
        match io {
            Io::Send(msg) => sent.push(msg.kind()),
            Io::Need(need) => r.on_answer(work::execute(&server, need).unwrap()).unwrap(),
            Io::Recv(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sent, vec!["summary", "mesh-config"]);
    r.on_message(Message::Offer {
        entries: Vec::new(),
        dry_run: false,
        last: true,
        force: false,
    })
    .unwrap();
    let Some(Io::Refuse {
        code,
        close,
        message,
    }) = r.poll()
    else {
        panic!("the offer must be refused")
    };
    assert_eq!(code, ErrorCode::UnexpectedMessage);
    assert_eq!(close, CloseCode::ProtocolError);
    assert!(message.contains("Pull"), "{message}");
    assert!(r.poll().is_none() && r.is_done());
    assert!(matches!(r.finish(), Err(SessionError::Protocol(_))));
}

/// `Working` is taken (and dropped) by the drivers only when both sides negotiated
/// `still-working`; one that reaches a machine is out of order, from any peer.
#[test]
fn a_working_the_driver_did_not_take_is_an_unexpected_message() {
    let mut r = Responder::new(LAPTOP, "server", Features::SUPPORTED);
    let hello = Hello::current("old", Default::default());
    r.on_message(Message::Hello(hello)).unwrap();
    assert!(matches!(r.poll(), Some(Io::Send(Message::Hello(_)))));
    assert!(matches!(r.poll(), Some(Io::Recv(_))));
    r.on_message(Message::Working).unwrap();
    assert!(matches!(
        r.poll(),
        Some(Io::Refuse {
            code: ErrorCode::UnexpectedMessage,
            close: CloseCode::ProtocolError,
            ..
        })
    ));
}

/// A session that does not start with `Hello` is refused at once, with nothing sent before the
/// refusal; a `Hello` of no common version gets our `Hello` (so the peer sees our range), then
/// `Error(VersionMismatch)`.
#[test]
fn the_responder_greets_only_a_hello_it_can_speak() {
    let mut r = Responder::new(LAPTOP, "server", Features::SUPPORTED);
    r.on_message(summary(SessionMode::Sync)).unwrap();
    assert!(matches!(
        r.poll(),
        Some(Io::Refuse {
            code: ErrorCode::UnexpectedMessage,
            ..
        })
    ));
    assert!(!r.hello_taken() && r.is_done());

    let mut r = Responder::new(LAPTOP, "server", Features::SUPPORTED);
    let mut future = Hello::current("future", Default::default());
    future.protocol_min = future.protocol_max + 1;
    future.protocol_max += 5;
    r.on_message(Message::Hello(future)).unwrap();
    assert!(matches!(r.poll(), Some(Io::Send(Message::Hello(_)))));
    assert!(matches!(
        r.poll(),
        Some(Io::Refuse {
            code: ErrorCode::VersionMismatch,
            close: CloseCode::VersionMismatch,
            ..
        })
    ));
    assert!(matches!(r.finish(), Err(SessionError::Version(_))));
}
