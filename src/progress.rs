//! Progress for people and for logs: a bar on a terminal; otherwise (or with
//! --interval) pvmove's line format, "/dev/sda5: Encrypted: 12.50%"; with `-i 0`
//! nothing at all, as pvmove.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// LVM's default activation/polling_interval.
const DEFAULT_INTERVAL: u32 = 15;

pub struct Progress {
    pv: String,
    /// "Encrypted", or "Decrypted" for `--decrypt`.
    verb: &'static str,
    bar: Option<ProgressBar>,
    every: Duration,
    next: Instant,
    quiet: bool,
    started: Instant,
}

impl Progress {
    pub fn new(pv: &str, verb: &'static str, interval: Option<u32>, quiet: bool) -> Progress {
        // `-i 0` asks for no progress at all, as pvmove's.
        let quiet = quiet || interval == Some(0);
        let bar = (!quiet && interval.is_none() && !crate::output::detached() && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}}: {verb} {{bar:40}} {{percent:>3}}% {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
                ))
                .expect("valid template"),
            );
            b.set_prefix(pv.to_string());
            b
        });
        let every = Duration::from_secs(interval.unwrap_or(DEFAULT_INTERVAL) as u64);
        Progress { pv: pv.into(), verb, bar, every, next: Instant::now(), quiet, started: Instant::now() }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        } else if let Some(line) = self.line(done, total) {
            crate::output::info(&line);
        }
    }

    /// The progress line due now, if any.
    fn line(&mut self, done: u64, total: u64) -> Option<String> {
        if self.quiet || (Instant::now() < self.next && done != total) {
            return None;
        }
        self.next = Instant::now() + self.every;
        Some(format!("{}: {}: {}", self.pv, self.verb, percent(done, total)))
    }

    pub fn finish(&self) -> Duration {
        if let Some(b) = &self.bar {
            b.finish();
        }
        self.started.elapsed()
    }
}

/// pvmove prints two decimals.
pub fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        return "100.00%".into();
    }
    format!("{:.2}%", done as f64 * 100.0 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::{percent, Progress};

    #[test]
    fn interval_zero_prints_nothing() {
        let mut p = Progress::new("/dev/sda5", "Encrypted", Some(0), false);
        assert!(p.bar.is_none());
        assert_eq!(p.line(1, 8), None);
        assert_eq!(p.line(8, 8), None);
    }

    #[test]
    fn interval_lines_like_pvmove() {
        let mut p = Progress::new("/dev/sda5", "Encrypted", Some(3600), false);
        assert!(p.bar.is_none());
        assert_eq!(p.line(1, 8).as_deref(), Some("/dev/sda5: Encrypted: 12.50%"));
        // Not due again for an hour, except the last line.
        assert_eq!(p.line(2, 8), None);
        assert_eq!(p.line(8, 8).as_deref(), Some("/dev/sda5: Encrypted: 100.00%"));
    }

    #[test]
    fn percent_like_pvmove() {
        assert_eq!(percent(1, 8), "12.50%");
        assert_eq!(percent(0, 100), "0.00%");
        assert_eq!(percent(100, 100), "100.00%");
        assert_eq!(percent(0, 0), "100.00%");
    }
}
