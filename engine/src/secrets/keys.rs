//! Secret key names: which keys of a config (`password`, `api_key`, `auth_token`, ...) hold a
//! secret, and which only point at one (`token_file`, `key_path`).
//!
//! A key name is split into lowercase words at `_`, `-`, `.`, spaces and camelCase humps
//! (`apiKey` is `api key`). It names a secret when one of its words is a secret word, or two
//! adjacent words make one (`api key`, `private key`, `access key`); it names a reference when
//! its last word is `file`, `path`, `dir`, `env` or `url`, whatever comes before.

/// Words that alone make a key secret.
pub const SECRET_WORDS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "privatekey",
    "credentials",
    "credential",
    "auth",
];

/// Adjacent word pairs that make a key secret.
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("api", "key"),
    ("private", "key"),
    ("access", "key"),
    ("secret", "key"),
];

/// Last words that make a key a reference to a secret kept elsewhere.
const REFERENCE_WORDS: &[&str] = &["file", "path", "dir", "env", "url"];

/// True if a key called `name` holds a secret: by the built-in words, or because its lowercase
/// name contains one of `extra` (the config's `secret_keys`, compared case-insensitively).
/// A reference (`token_file`) is never secret.
pub fn is_secret_key(name: &str, extra: &[String]) -> bool {
    let words = words(name);
    if words
        .last()
        .is_some_and(|w| REFERENCE_WORDS.contains(&w.as_str()))
    {
        return false;
    }
    if words.iter().any(|w| SECRET_WORDS.contains(&w.as_str())) {
        return true;
    }
    if words
        .windows(2)
        .any(|p| SECRET_PAIRS.contains(&(p[0].as_str(), p[1].as_str())))
    {
        return true;
    }
    let lower = name.to_lowercase();
    extra
        .iter()
        .any(|e| !e.is_empty() && lower.contains(&e.to_lowercase()))
}

/// The lowercase words of a key name.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn secret_names_are_recognized() {
        for name in [
            "token",
            "auth_token",
            "GITHUB_TOKEN",
            "password",
            "db-passwd",
            "client_secret",
            "api_key",
            "apiKey",
            "apikey",
            "OPENAI_API_KEY",
            "private_key",
            "privateKey",
            "aws_secret_access_key",
            "credentials",
            "auth",
            "basic.auth",
        ] {
            assert!(is_secret_key(name, &[]), "{name}");
        }
    }

    #[test]
    fn references_and_lookalikes_are_not_secret() {
        for name in [
            "token_file",
            "tokenFile",
            "password_path",
            "credentials_dir",
            "private_key_file",
            "max_tokens",
            "author",
            "authority",
            "name",
            "tailscale_ip",
            "webhook",
            "keyboard",
            "monkey",
            "secretary",
        ] {
            assert!(!is_secret_key(name, &[]), "{name}");
        }
    }

    #[test]
    fn configured_names_are_secret_too() {
        let extra = vec!["Signing".to_owned()];
        assert!(is_secret_key("webhook_signing", &extra));
        assert!(!is_secret_key("webhook", &extra));
        assert!(!is_secret_key("webhook_signing_file", &extra));
    }

    proptest! {
        /// Whatever a key is called, its `_file` reference is never secret.
        #[test]
        fn a_file_reference_is_never_secret(name in "[A-Za-z_]{0,20}") {
            let reference = format!("{name}_file");
            prop_assert!(!is_secret_key(&reference, &[]));
        }
    }
}
