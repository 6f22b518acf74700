//! A plain progress bar on stderr: redrawn in place on a terminal (at most ten times a
//! second), one line per tenth otherwise (logs, CI), nothing when off.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress of `total` units of work.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    terminal: bool,
    label: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
    last_tenth: u64,
}

impl Progress {
    /// A bar for `total` units named `label` (e.g. "dead letters"); silent unless
    /// `enabled`.
    pub fn new(enabled: bool, total: u64, label: &'static str) -> Progress {
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            label,
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
            last_tenth: 0,
        }
    }

    /// The bar's text after `done` of the total.
    pub fn render(&self, done: u64) -> String {
        const WIDTH: u64 = 32;
        let filled = (done.min(self.total) * WIDTH)
            .checked_div(self.total)
            .unwrap_or(WIDTH);
        let percent = (done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(100);
        let secs = self.started.elapsed().as_secs_f64();
        format!(
            "[{}{}] {percent:>3}% {done}/{} {} ({secs:.1} s)",
            "=".repeat(filled as usize),
            " ".repeat((WIDTH - filled) as usize),
            self.total,
            self.label,
        )
    }

    /// Counts `n` more units done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if !self.enabled {
            return;
        }
        if self.terminal {
            let due = self
                .last_draw
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if due || self.done >= self.total {
                self.last_draw = Some(Instant::now());
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{}", self.render(self.done));
                let _ = err.flush();
            }
        } else {
            let tenth = (self.done.min(self.total) * 10)
                .checked_div(self.total)
                .unwrap_or(10);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                eprintln!("{}", self.render(self.done));
            }
        }
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.enabled && self.terminal && self.last_draw.is_some() {
            eprintln!("\r{}", self.render(self.done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fill_and_counts() {
        let p = Progress::new(false, 8, "dead letters");
        let s = p.render(2);
        assert!(
            s.starts_with(&format!(
                "[{}{}]  25% 2/8 dead letters",
                "=".repeat(8),
                " ".repeat(24)
            )),
            "{s}"
        );
        assert!(p.render(8).contains("100% 8/8"));
        let empty = Progress::new(false, 0, "x");
        assert!(empty.render(0).contains("100% 0/0"), "no work is done work");
    }
}
