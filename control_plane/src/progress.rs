//! Progress of long CLI operations (tenant creation, basebackup export,
//! waiting for the pageserver to catch up) with `indicatif`: a spinner or a
//! byte counter on stderr when it is a terminal, nothing at all otherwise
//! (scripts, tests, the console daemon whose stderr is its log).

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner showing `msg` and the elapsed time until dropped or finished.
pub fn spinner(msg: impl Into<Cow<'static, str>>) -> Progress {
    if !on_terminal() {
        return Progress(ProgressBar::hidden());
    }
    let bar = ProgressBar::new_spinner().with_message(msg);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    Progress(bar)
}

/// A counter of bytes received, with their rate.
pub fn bytes(msg: impl Into<Cow<'static, str>>) -> Progress {
    if !on_terminal() {
        return Progress(ProgressBar::hidden());
    }
    let bar = ProgressBar::new_spinner().with_message(msg);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {bytes} ({bytes_per_sec}, {elapsed})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    Progress(bar)
}

/// A running progress display; cleared from the terminal when dropped.
pub struct Progress(ProgressBar);

impl Progress {
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        self.0.set_message(msg);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hidden_without_a_terminal() {
        // Test runs capture stderr: nothing may be drawn, and it must not fail.
        let p = super::bytes("bytes");
        p.inc(10);
        p.set_message("more");
        drop(p);
        drop(super::spinner("waiting"));
    }
}
