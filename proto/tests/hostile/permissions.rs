//! Permission bits on the wire: exactly the nine rwx bits travel; anything else (setuid,
//! setgid, sticky, file-type bits) is a malformed entry (`docs/PROTOCOL.md`, `FileEntry`).

use botsync_proto::close::CloseCode;
use botsync_proto::messages::{Message, SessionMode, WireKind};

use crate::harness::{listen_memory, tombstone};

#[tokio::test]
async fn an_entry_with_setuid_or_file_type_bits_is_refused() {
    for bits in [0o4755u16, 0o2755, 0o1777, 0o100_644] {
        let mut s = listen_memory().await;
        let mut script = s.script().await;
        script.open(SessionMode::Push).await;
        let mut entry = tombstone("memory/run.sh", s.client_id, &[(s.client_id, 1)]);
        entry.file.kind = WireKind::File;
        entry.file.mode = bits;
        script
            .send_unchecked(&Message::Offer {
                entries: vec![entry],
                dry_run: true,
                last: true,
                force: false,
            })
            .await;
        assert_eq!(script.recv().await, None, "mode {bits:o} was answered");
        assert_eq!(script.closed().await, Some(CloseCode::BadMessage));
        let err = s.served().await.unwrap_err();
        assert!(err.contains("permission bits"), "{err}");
    }
}
