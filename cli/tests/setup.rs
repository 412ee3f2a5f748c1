//! Setting botsync up on a machine: shell completions, the user service, and finding peers on
//! the tailnet.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Peer;

#[test]
fn completions_are_printed_for_every_shell() {
    let p = Peer::new("alpha");
    for (shell, marker) in [
        ("bash", "complete -F _botsync"),
        ("zsh", "#compdef botsync"),
        ("fish", "complete -c botsync"),
        ("elvish", "edit:completion:arg-completer[botsync]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = p.cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("discover"), "{shell} lacks the verbs");
    }
    let out = p
        .cmd()
        .args(["--json", "completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn service_install_writes_a_user_unit_that_runs_serve_and_uninstall_removes_it() {
    let p = Peer::new("alpha");
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = p
            .cmd()
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        )
    };
    let (code, json) = run(&["service", "install", "--listen", "0.0.0.0:7475"]);
    assert_eq!(code, Some(0), "{json}");
    let unit = home
        .path()
        .join(".config/systemd/user/botsync-alpha.service");
    assert_eq!(json["installed"], unit.display().to_string());
    assert!(
        json["start"]
            .as_str()
            .unwrap()
            .contains("systemctl --user enable --now botsync-alpha.service")
    );
    assert!(
        json["logs"]
            .as_str()
            .unwrap()
            .contains("journalctl --user -u botsync-alpha.service")
    );
    let text = std::fs::read_to_string(&unit).unwrap();
    let exe = assert_cmd::cargo::cargo_bin("botsync");
    let expected = format!(
        "ExecStart=\"{}\" \"-w\" \"{}\" \"serve\" \"--listen\" \"0.0.0.0:7475\"",
        exe.display(),
        p.root().display()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("WantedBy=default.target"), "{text}");
    // Checked by systemd itself where it is installed.
    if let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
    {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze: {stderr}");
        assert!(!stderr.contains(&unit.display().to_string()), "{stderr}");
    }
    // $XDG_CONFIG_HOME is respected.
    let xdg = tempfile::tempdir().unwrap();
    let out = p
        .cmd()
        .env("XDG_CONFIG_HOME", xdg.path())
        .args(["service", "install"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        xdg.path()
            .join("systemd/user/botsync-alpha.service")
            .exists()
    );

    let (code, json) = run(&["service", "uninstall"]);
    assert_eq!(code, Some(0), "{json}");
    assert!(!unit.exists());
    assert!(
        json["stop"]
            .as_str()
            .unwrap()
            .contains("systemctl --user disable --now")
    );
    let (code, json) = run(&["service", "uninstall"]);
    assert_eq!(code, Some(2), "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("botsync service install")
    );
}

/// A `tailscale` on a PATH of its own that prints `status` as its status document.
fn fake_tailscale(status: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("status.json"), status.to_string()).unwrap();
    let script = dir.path().join("tailscale");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"status --json\" ] || exit 9\ncat '{}'\n",
            dir.path().join("status.json").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn path_with(dir: &std::path::Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn discover_finds_the_tailnet_peer_that_runs_botsync_and_prints_a_ready_add_line() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let server = b.serve();
    let status = serde_json::json!({
        "Self": { "HostName": "alpha", "TailscaleIPs": ["127.0.0.9"], "Online": true },
        "Peer": {
            "nodekey:1": { "HostName": "Mac-Mini", "DNSName": "mac-mini.tail1234.ts.net.",
                           "TailscaleIPs": ["127.0.0.1", "fd7a:115c:a1e0::1"], "Online": true },
            "nodekey:2": { "HostName": "printer", "DNSName": "printer.tail1234.ts.net.",
                           "TailscaleIPs": ["127.0.0.2"], "Online": true },
            "nodekey:3": { "HostName": "old-laptop", "TailscaleIPs": ["100.64.0.3"], "Online": false }
        }
    });
    let fake = fake_tailscale(&status);
    let port = server.port.to_string();
    let out = a
        .cmd()
        .env("PATH", path_with(fake.path()))
        .args(["--json", "discover", "--port", &port])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let peers = json["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "offline peers are not listed: {json}");
    let mini = peers.iter().find(|p| p["name"] == "mac-mini").unwrap();
    assert_eq!(mini["botsync"], true, "{json}");
    assert_eq!(mini["id"], b.id());
    let add = mini["add"].as_str().unwrap().to_owned();
    assert_eq!(
        add,
        format!("botsync add mac-mini 127.0.0.1:{port} --id {}", b.id())
    );
    let printer = peers.iter().find(|p| p["name"] == "printer").unwrap();
    assert_eq!(printer["botsync"], false, "{json}");
    assert!(!printer["error"].as_str().unwrap().is_empty());
    // The printed line works as it is.
    let words: Vec<&str> = add.split(' ').skip(1).collect();
    a.ok(&words);
    let human = a
        .cmd()
        .env("PATH", path_with(fake.path()))
        .args(["discover", "--port", &port])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("already added as mac-mini"), "{text}");
}

#[test]
fn discover_without_tailscale_says_how_to_get_it() {
    let a = Peer::new("alpha");
    let empty = tempfile::tempdir().unwrap();
    let out = a
        .cmd()
        .env("PATH", empty.path())
        .args(["--json", "discover"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("install Tailscale"),
        "{json}"
    );
}

#[test]
fn logs_go_to_stderr_as_plain_text_at_the_level_rust_log_or_v_asks() {
    let p = Peer::new("alpha");
    let quiet = p.cmd().arg("scan").output().unwrap();
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
    for (env, flag) in [(Some("debug"), None), (None, Some("-vv"))] {
        let mut cmd = p.cmd();
        if let Some(level) = env {
            cmd.env("RUST_LOG", level);
        }
        cmd.args(flag).arg("scan");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(" DEBUG "), "{env:?} {flag:?}: {stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "colour codes into a pipe: {stderr:?}"
        );
        assert!(!out.stdout.is_empty());
    }
}
