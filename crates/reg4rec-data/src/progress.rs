//! The one progress-bar style of reg4rec: drawn on stderr, hidden when stderr is not a terminal or when
//! `REG4REC_NO_PROGRESS` is set (to anything), so logs and tests stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Whether progress bars are drawn in this process.
pub fn enabled() -> bool {
    std::env::var_os("REG4REC_NO_PROGRESS").is_none() && std::io::stderr().is_terminal()
}

/// A progress bar over `len` steps labelled `msg` (hidden, but still counting, when [`enabled`] is false).
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if enabled() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_message(msg.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_counts_and_is_hidden_off_a_terminal() {
        let pb = bar(10, "test");
        pb.inc(3);
        assert_eq!(pb.position(), 3);
        assert_eq!(pb.length(), Some(10));
        assert_eq!(pb.message(), "test");
        // cargo test captures stderr: not a terminal, so nothing is drawn.
        if !std::io::stderr().is_terminal() {
            assert!(pb.is_hidden());
        }
    }
}
