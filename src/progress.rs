//! Progress for people and for logs: a bar on a terminal; otherwise (or with
//! --interval) pvmove's line format, "/dev/sda5: Encrypted: 12.50%".

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// LVM's default activation/polling_interval.
const DEFAULT_INTERVAL: u32 = 15;

pub struct Progress {
    pv: String,
    bar: Option<ProgressBar>,
    every: Duration,
    next: Instant,
    quiet: bool,
    started: Instant,
}

impl Progress {
    pub fn new(pv: &str, interval: Option<u32>, quiet: bool) -> Progress {
        let bar = (!quiet && interval.is_none() && !crate::poll::detached() && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix}: Encrypted {bar:40} {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template"),
            );
            b.set_prefix(pv.to_string());
            b
        });
        let every = Duration::from_secs(interval.unwrap_or(DEFAULT_INTERVAL).max(1) as u64);
        Progress { pv: pv.into(), bar, every, next: Instant::now(), quiet, started: Instant::now() }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        } else if !self.quiet && (Instant::now() >= self.next || done == total) {
            self.next = Instant::now() + self.every;
            crate::poll::info(&format!("{}: Encrypted: {}", self.pv, percent(done, total)));
        }
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
    use super::percent;

    #[test]
    fn percent_like_pvmove() {
        assert_eq!(percent(1, 8), "12.50%");
        assert_eq!(percent(0, 100), "0.00%");
        assert_eq!(percent(100, 100), "100.00%");
        assert_eq!(percent(0, 0), "100.00%");
    }
}
