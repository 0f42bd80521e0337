//! The `steward` command: run a node (`steward --node NAME`), or talk to the node running on a
//! data directory (`steward send`, `steward status`, `steward cancel`). See `steward --help`.

mod cli;
mod client;
mod commands;
mod output;
mod profiling;
mod run;
mod settings;

use std::io::IsTerminal;

use clap::Parser;

use cli::{Cli, Cmd, LogFormat};

/// mimalloc instead of the C library's allocator: a node allocates and frees small buffers for
/// every message on several threads, where glibc's malloc cost about 15 % of its CPU
/// (`steward-bench --only pipeline`: 53 → 45 µs per message, both ends).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs go to standard error, filtered by `--log-level` (a level or a tracing directive), as
/// text or as one JSON object per line (`--log-format json`).
pub(crate) fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("steward: bad --log-level {level:?} ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // Fields (msg_id, from, to, method, ...) at the top level of each line; the span a
        // method runs in under "span".
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steward: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        match cli.cmd {
            None => {
                match settings::resolve(
                    &cli.common,
                    Some(&cli.conn),
                    Some(&cli.tuning),
                    Some(&cli.run),
                    Some(&cli.security),
                ) {
                    Ok(s) => {
                        init_logging(s.log_level.as_deref().unwrap_or("info"), s.log_format);
                        run::run(s).await
                    }
                    Err(e) => {
                        eprintln!("steward: {e}");
                        2
                    }
                }
            }
            Some(Cmd::Send(a)) => commands::send(*a).await,
            Some(Cmd::Status(a)) => commands::status(a).await,
            Some(Cmd::Cancel(a)) => commands::cancel(a).await,
            Some(Cmd::Keys(a)) => commands::keys(a).await,
        }
    });
    // Do not wait for detached tasks (connections, the profiling server): the node is stopped.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
