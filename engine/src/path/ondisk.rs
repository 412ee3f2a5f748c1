//! Finding a workspace path's spelling on disk.
//!
//! A [`RelPath`] is NFC, and so is what the wire carries; a file system may hold the same name
//! in another normalization (macOS writes NFD, and a file copied from there keeps it). Such a
//! name is the same file: reading it, replacing it and deleting it must use the name that is on
//! disk, or a sync would read nothing (the sender's chunks "vanish") or write a second file
//! beside it. Only a component that is not ASCII can be spelled two ways, so ASCII paths cost
//! no system call; otherwise the exact name is tried first and the directory is listed only
//! when it is absent.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use unicode_normalization::UnicodeNormalization;

use super::RelPath;

impl RelPath {
    /// The path under `root` as it is spelled on disk: each component that exists only in
    /// another Unicode normalization is taken with its on-disk name; components that do not
    /// exist (a file about to be created) keep their normalized name.
    pub fn on_disk(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.components() {
            let name = name_in(&p, c);
            p.push(name);
        }
        p
    }
}

/// The name in `dir` that normalizes to `name` (itself when it exists or nothing matches).
pub(crate) fn name_in(dir: &Path, name: &str) -> OsString {
    if name.is_ascii() || fs::symlink_metadata(dir.join(name)).is_ok() {
        return OsString::from(name);
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return OsString::from(name);
    };
    for e in entries.flatten() {
        let raw = e.file_name();
        if let Ok(s) = std::str::from_utf8(raw.as_bytes())
            && !s.is_ascii()
            && s.nfc().eq(name.chars())
        {
            return raw;
        }
    }
    OsString::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever mix of precomposed and decomposed letters a name has on disk, its NFC
        /// path finds that file, and nothing else is created beside it.
        #[test]
        fn any_spelling_on_disk_is_found_from_the_nfc_path(
            dir in "[a\u{e9}\u{fc}\u{f1}]{1,4}",
            file in "[a\u{e9}\u{fc}\u{f1}\u{c5}]{1,6}",
            decompose_dir in any::<bool>(),
            decompose_file in any::<bool>(),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let spell = |s: &str, nfd: bool| -> String {
                if nfd { s.nfd().collect() } else { s.to_owned() }
            };
            let disk = tmp.path().join(spell(&dir, decompose_dir)).join(spell(&file, decompose_file));
            fs::create_dir_all(disk.parent().unwrap()).unwrap();
            fs::write(&disk, "x").unwrap();
            let rel = RelPath::new(&format!("{dir}/{file}")).unwrap();
            prop_assert_eq!(rel.on_disk(tmp.path()), disk);
        }
    }

    #[test]
    fn an_nfd_name_on_disk_is_found_from_its_nfc_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("re\u{301}sume\u{301}s");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("cafe\u{301}.md"), "x").unwrap();
        let rel = RelPath::new("r\u{e9}sum\u{e9}s/caf\u{e9}.md").unwrap();
        assert_eq!(rel.on_disk(tmp.path()), dir.join("cafe\u{301}.md"));
        let fresh = RelPath::new("r\u{e9}sum\u{e9}s/th\u{e9}.md").unwrap();
        assert_eq!(fresh.on_disk(tmp.path()), dir.join("th\u{e9}.md"));
        let ascii = RelPath::new("memory/a.md").unwrap();
        assert_eq!(ascii.on_disk(tmp.path()), tmp.path().join("memory/a.md"));
    }
}
