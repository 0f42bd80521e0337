//! Process facts (resident memory, CPU time, threads, descriptors), resource limits, and child
//! processes of the bench binary itself that talk back one line at a time.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A field of `/proc/<pid>/status` in kB (or a count), e.g. `VmRSS` or `Threads`.
pub fn status_field(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// This process's resident memory in kB.
pub fn rss_kb() -> u64 {
    status_field("self", "VmRSS").unwrap_or(0)
}

/// This process's thread count.
pub fn threads() -> u64 {
    status_field("self", "Threads").unwrap_or(0)
}

/// This process's open file descriptors.
pub fn fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// CPU time (user + system) this process used so far.
pub fn cpu_self() -> Duration {
    // SAFETY: getrusage fills the struct we pass; no other memory is touched.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of another process, from `/proc/<pid>/stat` (clock-tick resolution).
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// Raises the soft limit of open files to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: get/setrlimit read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur as u64
    }
}

/// Size of a file in bytes (0 if missing).
pub fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// A one-line description of the machine and its load right now.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    let mem_kb = read("/proc/meminfo")
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let loadavg = read("/proc/loadavg");
    let load: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    serde_json::json!({
        "cpu": cpu,
        "cores": cores,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average": load.join(" "),
    })
}

/// A child process of this binary, started in one of its child modes, that reports on stdout
/// one line at a time and exits when its stdin closes.
pub struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    what: String,
}

impl ChildProc {
    /// Starts `steward-bench <args>` with `env` added.
    pub fn spawn(args: &[String], env: &[(&str, String)]) -> ChildProc {
        let exe = std::env::current_exe().expect("path of this binary");
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a child process {args:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        ChildProc {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            what: args.join(" "),
        }
    }

    /// The child's pid (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Writes one line to the child's stdin.
    pub async fn send_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    /// The next line that starts with one of `prefixes` (other lines are echoed to stderr),
    /// split into words; `None` if the child ended or `timeout` passed first.
    pub async fn expect(&mut self, prefixes: &[&str], timeout: Duration) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(_) => return None,
                Err(_) => {
                    eprintln!(
                        "bench: no {prefixes:?} from `{}` within {timeout:?}",
                        self.what
                    );
                    return None;
                }
            };
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if words
                .first()
                .is_some_and(|w| prefixes.contains(&w.as_str()))
            {
                return Some(words);
            }
            eprintln!("[{}] {line}", self.what);
        }
    }

    /// Closes stdin (the child exits) and waits for it, killing it after `grace`.
    pub async fn finish(mut self, grace: Duration) {
        self.stdin.take();
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// SIGKILL, then reap.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Reads a number from a word list, or panics with the line for context.
pub fn num<T: std::str::FromStr>(words: &[String], i: usize) -> T {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("unexpected child line {words:?} (field {i})"))
}

/// CPU time (user + system) of this process's threads so far, summed per thread name
/// (`/proc/self/task/*`, clock-tick resolution). Unlike wall-clock timings, it does not grow
/// when other processes compete for the cores.
pub fn cpu_by_thread() -> std::collections::BTreeMap<String, Duration> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let _ = tid;
        *out.entry(name.trim().to_owned()).or_insert(Duration::ZERO) +=
            Duration::from_micros(ticks * 1_000_000 / hz);
    }
    out
}
