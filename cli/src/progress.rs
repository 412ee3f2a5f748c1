//! A terminal progress bar fed by session progress events (none in `--json` or when piped).

use indicatif::{ProgressBar, ProgressStyle};

use botsync_proto::session::{Progress, ProgressEvent};

/// Draws bytes received against bytes planned.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A hidden-until-planned bar labelled with the peer's name.
    pub fn new(peer: &str) -> Bar {
        let bar = ProgressBar::new(0);
        // Until the plan is known there is no total to draw a bar against.
        if let Ok(style) = ProgressStyle::with_template("{prefix} {msg}") {
            bar.set_style(style);
        }
        bar.set_prefix(peer.to_owned());
        bar.set_message("comparing...");
        Bar { bar }
    }

    fn show_bar(&self) {
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.bar.set_style(style);
    }

    /// Remove the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn event(&self, event: ProgressEvent) {
        match event {
            ProgressEvent::Planned { files, bytes } => {
                self.show_bar();
                self.bar.set_length(bytes);
                self.bar.set_message(format!("{files} files"));
            }
            ProgressEvent::Received { bytes } | ProgressEvent::Sent { bytes } => {
                self.bar.inc(bytes)
            }
            ProgressEvent::Applied { path } => self.bar.set_message(path),
        }
    }
}
