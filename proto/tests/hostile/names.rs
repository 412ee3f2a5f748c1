//! Names that render deceptively (bidi overrides, line separators, zero-width characters,
//! surrounding spaces) are refused on the wire as malformed paths (`docs/PROTOCOL.md`,
//! `RelPath`): they were written as given.

use botsync_engine::RelPath;
use botsync_proto::close::CloseCode;
use botsync_proto::codec::{CodecError, decode, encode};
use botsync_proto::messages::{Message, SessionMode};

use crate::harness::listen_memory;

/// A `GetEntries` for `path`, where `path` is spelled with `placeholder` and its bytes are then
/// replaced by `real` (same length): `RelPath` itself refuses to build the real one.
fn get_entries_with(placeholder: &str, real: &str) -> Vec<u8> {
    assert_eq!(placeholder.len(), real.len());
    let msg = Message::GetEntries {
        paths: vec![RelPath::new(placeholder).unwrap()],
    };
    let mut bytes = encode(&msg).unwrap();
    let at = bytes
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_bytes())
        .unwrap();
    bytes.splice(at..at + real.len(), real.bytes());
    bytes
}

const DECEPTIVE: [(&str, &str); 5] = [
    ("memory/reportXYZfdp.exe", "memory/report\u{202E}fdp.exe"),
    ("memory/aXYZb.md", "memory/a\u{2028}b.md"),
    ("memory/noteXYZ.md", "memory/note\u{200B}.md"),
    ("memory/_notes.md", "memory/ notes.md"),
    ("memory/notes.md_", "memory/notes.md "),
];

#[test]
fn deceptive_names_do_not_decode() {
    for (placeholder, real) in DECEPTIVE {
        let err = decode(&get_entries_with(placeholder, real)).unwrap_err();
        assert!(
            matches!(&err, CodecError::Malformed(m) if m.contains("deceptively")),
            "{real:?}: {err}"
        );
    }
}

#[tokio::test]
async fn a_peer_asking_for_a_deceptive_name_is_closed_with_bad_message() {
    let mut s = listen_memory().await;
    for (placeholder, real) in DECEPTIVE {
        let mut script = s.script().await;
        script.open(SessionMode::Sync).await;
        script.send_raw(&get_entries_with(placeholder, real)).await;
        assert_eq!(
            script.closed().await,
            Some(CloseCode::BadMessage),
            "{real:?}"
        );
        let err = s.served().await.unwrap_err();
        assert!(err.contains("deceptively"), "{err}");
    }
}
