//! The pieces of `steward-bench`: the measures (one module per section of issue 5), the child
//! process modes they use, and the table / JSON report.

pub mod backlog;
pub mod children;
pub mod fanout;
pub mod footprint;
pub mod proc;
pub mod report;
pub mod throughput;

use std::time::Duration;

/// Run-wide settings chosen on the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--quick`: smaller counts, the whole run under a minute.
    pub quick: bool,
    /// Where the JSON report goes.
    pub json: std::path::PathBuf,
    /// Only run these sections (empty: all).
    pub only: Vec<String>,
    /// Fan-out sizes to try.
    pub fanout: Vec<usize>,
    /// Messages in the backlog and recovery runs.
    pub backlog: usize,
    /// Messages queued for the memory and disk cost per message (100,000 even with `--quick`:
    /// fewer would mostly measure fixed costs, and queueing them takes about a second).
    pub queued: usize,
}

impl Settings {
    /// True if `section` should run (`pipeline`, a profiling target, only when asked for).
    pub fn runs(&self, section: &str) -> bool {
        (self.only.is_empty() && section != "pipeline") || self.only.iter().any(|s| s == section)
    }
}

/// p50 and p99 of a set of durations.
pub fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.99))
}

/// The median of a non-empty list.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
