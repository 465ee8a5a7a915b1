//! What one measured step costs: wall time, buffers touched in the database
//! (`pg_stat_database.blks_hit + blks_read`), WAL written, rows written to the application
//! tables, and the reconciler process's peak RSS.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub const BIN: &str = env!("CARGO_BIN_EXE_synqall-reconciler");

/// An empty config file: the benchmark must not pick up /etc/synqall-reconciler/config.toml.
pub fn empty_config() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join("synqall-bench-empty.toml");
        std::fs::write(&path, "").expect("write an empty config");
        path.display().to_string()
    })
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// What one measured run cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub wall: Duration,
    /// Every buffer the database's backends touched (connection start-up's catalog reads
    /// included), from `pg_stat_database`.
    pub buffers: i64,
    /// The buffers the statements touched, from `pg_stat_statements`.
    pub statement_buffers: i64,
    pub wal_bytes: i64,
    pub rows_written: i64,
    pub peak_rss_kib: i64,
}

pub fn median(mut costs: Vec<Cost>) -> Cost {
    costs.sort_by_key(|c| c.wall);
    costs[costs.len() / 2]
}

/// Counters of the server `client` is connected to, flushed (other backends flush theirs when
/// they go idle or exit; the measured process has exited, and we waited for it).
pub struct Counters {
    lsn: String,
    buffers: i64,
    statement_buffers: i64,
    rows: i64,
}

async fn flushed(client: &Client) {
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
}

impl Counters {
    pub async fn read(client: &Client) -> Self {
        flushed(client).await;
        let row = client
            .query_one(
                // A standby writes no WAL of its own: its position is what it replayed.
                "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                              ELSE pg_current_wal_insert_lsn() END)::text,
                        (SELECT (blks_hit + blks_read)::bigint FROM pg_stat_database
                          WHERE datname = current_database()),
                        (SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint
                           FROM pg_stat_user_tables
                          WHERE schemaname = 'public' AND relname IN ('organizations', 'calls')),
                        (SELECT COALESCE(sum(shared_blks_hit + shared_blks_read), 0)::bigint
                           FROM public.pg_stat_statements
                          WHERE dbid = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                            AND query NOT LIKE '%pg_stat_statements%')",
                &[],
            )
            .await
            .unwrap();
        Self {
            lsn: row.get(0),
            buffers: row.get(1),
            rows: row.get(2),
            statement_buffers: row.get(3),
        }
    }

    /// The cost since `self` was read (wall and RSS filled in by the caller).
    pub async fn since(&self, client: &Client) -> Cost {
        let now = Self::read(client).await;
        let wal: i64 = client
            .query_one(
                "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint",
                &[&now.lsn, &self.lsn],
            )
            .await
            .unwrap()
            .get(0);
        Cost {
            buffers: now.buffers - self.buffers,
            statement_buffers: now.statement_buffers - self.statement_buffers,
            wal_bytes: wal,
            rows_written: now.rows - self.rows,
            ..Cost::default()
        }
    }
}

/// Run SQL from a client, timing it and what it touched.
pub async fn measure_sql(client: &Client, sql: &str) -> Cost {
    let before = Counters::read(client).await;
    let started = Instant::now();
    client.batch_execute(sql).await.expect("measured SQL");
    let wall = started.elapsed();
    Cost {
        wall,
        ..before.since(client).await
    }
}

/// Run the reconciler as a process with `args` and `env`; wall time includes its start-up.
/// `also` is another server (a replica) whose buffers are returned too.
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub async fn measure_pass(client: &Client, url: &str, args: &[&str], env: &[(&str, &str)]) -> Cost {
    let before = Counters::read(client).await;
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("DATABASE_URL", url)
        .env("SYNQALL_RECONCILER_CONFIG", empty_config())
        .env("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "0")
        .env(
            "SYNQALL_RECONCILER__LOG__LEVEL",
            if std::env::var_os("BENCH_LOGS").is_some() {
                "info"
            } else {
                "warn"
            },
        )
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(pass_log())
        .spawn()
        .expect("start synqall-reconciler");
    let (status, peak_rss_kib) = wait_with_rusage(child.id() as i32);
    let wall = started.elapsed();
    assert!(
        status == 0 || status == 2,
        "synqall-reconciler {args:?} exited with {status}"
    );
    // Backends flush their statistics when they exit; give the last one a moment.
    tokio::time::sleep(Duration::from_millis(700)).await;
    Cost {
        wall,
        peak_rss_kib,
        ..before.since(client).await
    }
}

/// With `BENCH_LOGS=FILE`: every pass's log lines (at info: the summary with its
/// `orphans_ms`, `scan_ms`, `repair_ms`) appended to FILE; else discarded.
fn pass_log() -> std::process::Stdio {
    match std::env::var_os("BENCH_LOGS") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(std::process::Stdio::from)
            .unwrap_or_else(|_| std::process::Stdio::null()),
        None => std::process::Stdio::null(),
    }
}

/// Wait for the child; returns its exit code and its peak resident set size (KiB).
///
/// Not `ru_maxrss`: Linux folds the RSS of the process image before `exec` into it, and
/// `Command` spawns with vfork, so that would be this benchmark's own RSS (88 MiB after it
/// held 600k organization ids) whenever that is larger. `VmHWM` of `/proc/PID/status` is the
/// high-water mark of the program's own memory after `exec`; it is polled until the child
/// exits (a growth within the last few milliseconds could be missed).
fn wait_with_rusage(pid: i32) -> (i32, i64) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let done = done.clone();
        std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    if let Some(kib) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
                    {
                        peak = peak.max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid failed");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = poller.join().expect("the RSS poller");
    (libc::WEXITSTATUS(status), peak)
}

pub fn human_bytes(bytes: i64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// With `BENCH_TOP` set: forget the statement statistics, so that [`print_top`] shows one
/// step's statements.
pub async fn reset_top(client: &Client) {
    if std::env::var_os("BENCH_TOP").is_some() {
        client
            .batch_execute("SELECT public.pg_stat_statements_reset()")
            .await
            .unwrap();
    }
}

/// With `BENCH_TOP` set: the statements that touched the most buffers since [`reset_top`].
pub async fn print_top(client: &Client, what: &str) {
    if std::env::var_os("BENCH_TOP").is_none() {
        return;
    }
    let rows = client
        .query(
            "SELECT (shared_blks_hit + shared_blks_read)::bigint, calls,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 140)
               FROM public.pg_stat_statements
              WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              ORDER BY 1 DESC LIMIT 12",
            &[],
        )
        .await
        .unwrap();
    eprintln!("# top statements by buffers: {what}");
    for row in rows {
        eprintln!(
            "#   {:>8} buffers {:>5} calls  {}",
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, String>(2)
        );
    }
}
