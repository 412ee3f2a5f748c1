//! Characters that make a name render as something it is not, refused in every path.
//!
//! A name with a right-to-left override (`U+202E`) shows `report` U+202E `fdp.exe` as `reportexe.pdf`;
//! a line separator (`U+2028`) splits one name over two lines of a listing; a zero-width space
//! makes two names that look identical different files; a trailing space hides in every
//! terminal. None of these has a use in a workspace file name that outweighs the deception, so
//! [`crate::RelPath`] refuses them, from the local disk and from the wire alike.
//!
//! The refused characters are those of the Unicode general categories **Cf** (format: bidi
//! controls and marks, zero-width characters, the byte-order mark, invisible operators, tags),
//! **Zl** and **Zp** (line and paragraph separators); category Cc (controls) is refused by the
//! caller already. The table is Unicode 15.1's; it is written out here because the standard
//! library has no general-category lookup.

/// Inclusive ranges of Unicode general categories Cf, Zl and Zp (Unicode 15.1), in order.
const DECEPTIVE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{2028}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// True if `c` is a format character or a line or paragraph separator.
pub(crate) fn is_deceptive(c: char) -> bool {
    DECEPTIVE
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The first character of `component` that makes it render deceptively: a deceptive
/// character anywhere, or white space at either end.
pub(crate) fn first_deceptive(component: &str) -> Option<char> {
    let edge = |c: Option<char>| c.filter(|c| c.is_whitespace());
    edge(component.chars().next())
        .or_else(|| edge(component.chars().next_back()))
        .or_else(|| component.chars().find(|&c| is_deceptive(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        for pair in DECEPTIVE.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
    }

    #[test]
    fn bidi_controls_separators_and_invisibles_are_deceptive() {
        for c in [
            '\u{202E}',
            '\u{202A}',
            '\u{2066}',
            '\u{2069}',
            '\u{200E}',
            '\u{200F}',
            '\u{061C}',
            '\u{2028}',
            '\u{2029}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            assert!(is_deceptive(c), "U+{:04X}", c as u32);
        }
        for c in [
            'a', 'é', ' ', '-', '\u{00A0}', '日', '\u{0301}', '😀', '\u{2027}', '\u{2030}',
        ] {
            assert!(!is_deceptive(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn surrounding_white_space_is_deceptive() {
        assert_eq!(first_deceptive(" notes.md"), Some(' '));
        assert_eq!(first_deceptive("notes.md "), Some(' '));
        assert_eq!(first_deceptive("notes.md\u{3000}"), Some('\u{3000}'));
        assert_eq!(first_deceptive("my notes.md"), None);
        assert_eq!(first_deceptive("report\u{202E}fdp.exe"), Some('\u{202E}'));
    }
}
