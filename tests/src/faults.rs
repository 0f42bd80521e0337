//! Counting for the reliability suite: how many messages were sent, completed, lost, executed
//! twice and executed out of order, one table row per scenario.
//!
//! * [`Tally`]: the counts of one scenario, computed from what was sent (in order, per stream)
//!   and what the receivers actually executed (in execution order).
//! * [`full`] / [`scale`]: the short version runs in `cargo test`; `STEWARD_FULL=1` selects the
//!   issue's full numbers (`scripts/reliability.sh`).
//! * [`Rng`]: a tiny seeded generator for reproducible "random" fault points.
//! * [`read_record_log`], [`rss_kib`]: reading what a `steward-test-node` process executed and
//!   how much memory it holds.
//!
//! Every row is printed to stderr and, when `STEWARD_RELIABILITY_TABLE` names a file, appended
//! to it as one tab-separated line, so a script can print the whole table at the end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Env var selecting the full-size scenarios (`1`).
pub const FULL_ENV: &str = "STEWARD_FULL";
/// Env var naming a file that every printed row is appended to (tab-separated).
pub const TABLE_ENV: &str = "STEWARD_RELIABILITY_TABLE";
/// Env var fixing the seed of [`Rng::from_env`] (to replay a run's fault points).
pub const SEED_ENV: &str = "STEWARD_SEED";

/// True when the full-size scenarios were asked for (`STEWARD_FULL=1`).
pub fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|v| v == "1")
}

/// `short` in the normal test run, `full` with `STEWARD_FULL=1`.
pub fn scale<T>(short: T, full_value: T) -> T {
    if full() {
        full_value
    } else {
        short
    }
}

/// The counts of one scenario. Build it with [`Tally::single`] or [`Tally::streams`], set
/// [`Tally::completed`], then [`Tally::print`] and [`Tally::assert_clean`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Scenario name (first column).
    pub scenario: String,
    /// Messages sent (accepted by a sender).
    pub sent: usize,
    /// Messages whose sender saw them reach the expected final state (completed, or the
    /// legitimate refusal the scenario provokes).
    pub completed: usize,
    /// Messages that should have run and never did.
    pub lost: usize,
    /// Extra executions: a message run n times counts n-1.
    pub twice: usize,
    /// Executions that came after one sent later on the same stream.
    pub out_of_order: usize,
    /// Executions of something never sent, or sent but meant never to run.
    pub unexpected: usize,
    /// Wall time of the scenario.
    pub elapsed: Duration,
    /// Free text for the last column (e.g. "2 refused as expired, as intended").
    pub note: String,
}

impl Tally {
    /// Counts one stream: `expected` are the ids that must run, in the order sent; `executed`
    /// is what the receiver ran, in execution order. `sent` starts as `expected.len()`.
    pub fn single(scenario: &str, expected: &[String], executed: &[String]) -> Tally {
        Tally::streams(scenario, &[(expected.to_vec(), executed.to_vec())])
    }

    /// Counts several independent streams (order only matters within one).
    pub fn streams(scenario: &str, streams: &[(Vec<String>, Vec<String>)]) -> Tally {
        let mut t = Tally {
            scenario: scenario.to_owned(),
            ..Tally::default()
        };
        for (expected, executed) in streams {
            t.sent += expected.len();
            let position: HashMap<&str, usize> = expected
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect();
            let mut runs: HashMap<&str, usize> = HashMap::new();
            let mut highest: Option<usize> = None;
            for id in executed {
                let n = runs.entry(id.as_str()).or_insert(0);
                *n += 1;
                let Some(&pos) = position.get(id.as_str()) else {
                    if *n == 1 {
                        t.unexpected += 1;
                    }
                    continue;
                };
                if *n > 1 {
                    t.twice += 1;
                    continue;
                }
                match highest {
                    Some(h) if pos < h => t.out_of_order += 1,
                    _ => highest = Some(pos),
                }
            }
            t.lost += expected
                .iter()
                .filter(|id| !runs.contains_key(id.as_str()))
                .count();
        }
        t
    }

    /// Sets the completed count.
    pub fn completed(mut self, n: usize) -> Tally {
        self.completed = n;
        self
    }

    /// Sets the sent count (when more were sent than were meant to run).
    pub fn sent(mut self, n: usize) -> Tally {
        self.sent = n;
        self
    }

    /// Sets the elapsed time from a start instant.
    pub fn since(mut self, start: Instant) -> Tally {
        self.elapsed = start.elapsed();
        self
    }

    /// Sets the note column.
    pub fn note(mut self, note: impl Into<String>) -> Tally {
        self.note = note.into();
        self
    }

    /// The table header line.
    pub fn header() -> String {
        format!(
            "{:<44} {:>7} {:>9} {:>5} {:>14} {:>12} {:>8}  note",
            "scenario", "sent", "completed", "lost", "executed twice", "out of order", "time"
        )
    }

    /// This tally as one aligned table line.
    pub fn row(&self) -> String {
        let mut note = self.note.clone();
        if self.unexpected > 0 {
            let _ = write!(note, " UNEXPECTED EXECUTIONS: {}", self.unexpected);
        }
        format!(
            "{:<44} {:>7} {:>9} {:>5} {:>14} {:>12} {:>7.1}s  {}",
            self.scenario,
            self.sent,
            self.completed,
            self.lost,
            self.twice,
            self.out_of_order,
            self.elapsed.as_secs_f64(),
            note.trim()
        )
    }

    /// This tally as a tab-separated record (see [`parse_tsv`]).
    pub fn tsv(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.3}\t{}",
            self.scenario,
            self.sent,
            self.completed,
            self.lost,
            self.twice,
            self.out_of_order,
            self.unexpected,
            self.elapsed.as_secs_f64(),
            self.note.replace(['\t', '\n'], " ")
        )
    }

    /// Prints the header and row to stderr and appends the row to `$STEWARD_RELIABILITY_TABLE`.
    pub fn print(&self) {
        eprintln!("{}\n{}", Tally::header(), self.row());
        if let Some(path) = std::env::var_os(TABLE_ENV).filter(|p| !p.is_empty()) {
            let line = format!("{}\n", self.tsv());
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                eprintln!(
                    "cannot append to {}: {e}",
                    Path::new(&path).to_string_lossy()
                );
            }
        }
    }

    /// Asserts nothing lost, nothing run twice or out of order, nothing unexpected run, and
    /// `completed == sent`.
    pub fn assert_clean(&self) {
        self.assert_no_loss_dup_reorder();
        assert_eq!(
            self.completed,
            self.sent,
            "{}: not every sent message completed\n{}",
            self.scenario,
            self.row()
        );
    }

    /// Asserts lost, executed twice, out of order and unexpected are all zero.
    pub fn assert_no_loss_dup_reorder(&self) {
        assert_eq!(
            (self.lost, self.twice, self.out_of_order, self.unexpected),
            (0, 0, 0, 0),
            "{}: (lost, executed twice, out of order, unexpected) must all be 0\n{}\n{}",
            self.scenario,
            Tally::header(),
            self.row()
        );
    }
}

/// Parses a line written by [`Tally::tsv`].
pub fn parse_tsv(line: &str) -> Option<Tally> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 9 {
        return None;
    }
    Some(Tally {
        scenario: f[0].to_owned(),
        sent: f[1].parse().ok()?,
        completed: f[2].parse().ok()?,
        lost: f[3].parse().ok()?,
        twice: f[4].parse().ok()?,
        out_of_order: f[5].parse().ok()?,
        unexpected: f[6].parse().ok()?,
        elapsed: Duration::try_from_secs_f64(f[7].parse().ok()?).ok()?,
        note: f[8..].join(" "),
    })
}

/// Formats rows as a table with a header and a totals line.
pub fn table(rows: &[Tally]) -> String {
    let mut out = Tally::header();
    out.push('\n');
    let mut total = Tally {
        scenario: format!("TOTAL ({} scenarios)", rows.len()),
        ..Tally::default()
    };
    for r in rows {
        out.push_str(&r.row());
        out.push('\n');
        total.sent += r.sent;
        total.completed += r.completed;
        total.lost += r.lost;
        total.twice += r.twice;
        total.out_of_order += r.out_of_order;
        total.unexpected += r.unexpected;
        total.elapsed += r.elapsed;
    }
    out.push_str(&total.row());
    out.push('\n');
    out
}

/// Ids `<prefix>-<i>` for `i` in `range`, the naming every scenario uses.
pub fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// What a `steward-test-node` receiver executed: the first data word (the id the tests put
/// there) of every line of its `<dir>/<name>/record.log` (lines are `FROM DATA...`), in
/// execution order.
pub fn read_record_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
        .collect()
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`), `None` if gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A small seeded xorshift generator: reproducible fault points without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with this seed (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Seeded from `$STEWARD_SEED`, else from the clock; prints the seed so a failing run can
    /// be replayed.
    pub fn from_env(scenario: &str) -> Rng {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{scenario}: {SEED_ENV}={seed}");
        Rng::new(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn counts_loss_duplicates_reordering_and_strangers() {
        let sent = v(&["a", "b", "c", "d", "e"]);
        let t = Tally::single("x", &sent, &v(&["a", "c", "b", "c", "e", "z"]));
        assert_eq!(
            (t.sent, t.lost, t.twice, t.out_of_order, t.unexpected),
            (5, 1, 1, 1, 1)
        );
        let clean = Tally::single("y", &sent, &sent).completed(5);
        clean.assert_clean();
        let rows = table(&[t.clone(), clean]);
        assert!(rows.contains("TOTAL (2 scenarios)"), "{rows}");
        assert_eq!(parse_tsv(&t.tsv()).unwrap().lost, 1);
    }

    #[test]
    fn streams_are_ordered_independently() {
        let t = Tally::streams(
            "s",
            &[
                (v(&["a1", "a2"]), v(&["a1", "a2"])),
                (v(&["b1", "b2"]), v(&["b1", "b2"])),
            ],
        );
        assert_eq!((t.sent, t.out_of_order), (4, 0));
    }

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..20).contains(&x));
        }
    }
}
