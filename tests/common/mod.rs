//! Test harness: one throwaway PostgreSQL cluster per test binary (the library's own
//! [`LocalCluster`]), a fresh database per test with the same Supabase stand-in `demo` uses,
//! helpers to plant data, and a runner for the real binary.
//!
//! PostgreSQL missing is a failure with a message saying what to install, never a skip.
//! Set `TEST_LOG=1` to see the binary's stderr for every run.

#![allow(dead_code)] // each test binary uses a different subset

pub mod app;

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use synqall_reconciler::demo::{
    execute_sql, SEED_FIX_SQL, SUPABASE_ROLES_SQL, SUPABASE_STANDIN_SQL,
};
use synqall_reconciler::local_pg::LocalCluster;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_synqall-reconciler");

static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The shared cluster of this test binary, started on first use with the API roles created.
pub fn cluster() -> &'static LocalCluster {
    CLUSTER.get_or_init(|| {
        // Runs inside a test's runtime: do the blocking work and the role setup on a thread of
        // its own.
        std::thread::spawn(|| {
            let cluster = LocalCluster::start().unwrap_or_else(|e| {
                panic!("cannot start the test PostgreSQL cluster: {e}");
            });
            let url = cluster.url("postgres");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(execute_sql(&url, SUPABASE_ROLES_SQL))
                .expect("create the Supabase API roles");
            cluster
        })
        .join()
        .expect("cluster start-up thread panicked")
    })
}

/// Connect and drive the connection on the current runtime.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl TestDb {
    /// The Supabase stand-in as it was before the incident fix: no used_minutes, no migrations.
    pub async fn bare() -> Self {
        let cluster = cluster();
        let name = format!("test_{}", NEXT_DB.fetch_add(1, Ordering::SeqCst));
        execute_sql(&cluster.url("postgres"), &format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = cluster.url(&name);
        execute_sql(&url, SUPABASE_STANDIN_SQL)
            .await
            .expect("load the Supabase stand-in");
        let client = connect(&url).await;
        Self { name, url, client }
    }

    /// The production state today: the stand-in with the seed's SQL run by hand.
    pub async fn seeded() -> Self {
        let db = Self::bare().await;
        db.exec(SEED_FIX_SQL).await;
        db
    }

    /// Migrated with the real `migrate` command.
    pub async fn migrated() -> Self {
        let db = Self::bare().await;
        let out = db.run(&["migrate"], &[]).await;
        assert_eq!(out.code(), 0, "migrate failed: {}", out.stderr);
        db
    }

    /// A login that is a member of the least-privilege role `synqall_reconciler` (migration
    /// V3); returns a URL connecting as it.
    pub async fn reconciler_login(&self) -> String {
        let login = format!("{}_login", self.name);
        self.exec(&format!(
            "CREATE ROLE {login} LOGIN IN ROLE synqall_reconciler"
        ))
        .await;
        self.url
            .replacen("postgres://postgres@", &format!("postgres://{login}@"), 1)
    }

    pub async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"))
            .get(0)
    }

    /// An organization with the given counter (None = NULL; requires used_minutes to exist).
    pub async fn org(&self, name: &str, used_minutes: Option<i32>) -> Uuid {
        self.client
            .query_one(
                "INSERT INTO public.organizations (name, used_minutes) VALUES ($1, $2) RETURNING id",
                &[&name, &used_minutes],
            )
            .await
            .expect("insert organization")
            .get(0)
    }

    pub async fn user(&self) -> Uuid {
        self.scalar("INSERT INTO auth.users (email) VALUES ('u@example.com') RETURNING id")
            .await
    }

    /// Membership that started `days_ago` days ago.
    pub async fn member(&self, user: Uuid, org: Uuid, days_ago: i32) {
        self.client
            .execute(
                "INSERT INTO public.user_organizations (user_id, organization_id, created_at)
                 VALUES ($1, $2, now() - make_interval(days => $3))",
                &[&user, &org, &days_ago],
            )
            .await
            .expect("insert membership");
    }

    /// A call made `days_ago` days ago.
    pub async fn call(
        &self,
        user: Uuid,
        org: Option<Uuid>,
        status: &str,
        minutes: Option<i32>,
        days_ago: i32,
    ) -> Uuid {
        self.client
            .query_one(
                "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at)
                 VALUES ($1, $2, $3, $4, now() - make_interval(days => $5)) RETURNING id",
                &[&user, &org, &status, &minutes, &days_ago],
            )
            .await
            .expect("insert call")
            .get(0)
    }

    /// A completed call with its minutes_transcribed row, as the app writes them.
    pub async fn completed_call(&self, user: Uuid, org: Uuid, minutes: i32) -> Uuid {
        let id = self
            .call(user, Some(org), "completed", Some(minutes), 1)
            .await;
        self.metric(org, minutes).await;
        id
    }

    pub async fn metric(&self, org: Uuid, minutes: i32) {
        self.client
            .execute(
                "INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
                 VALUES ($1, 'minutes_transcribed', $2::integer)",
                &[&org, &minutes],
            )
            .await
            .expect("insert usage metric");
    }

    pub async fn used_minutes(&self, org: Uuid) -> Option<i32> {
        self.client
            .query_one(
                "SELECT used_minutes FROM public.organizations WHERE id = $1",
                &[&org],
            )
            .await
            .expect("read used_minutes")
            .get(0)
    }

    pub async fn call_org(&self, call: Uuid) -> Option<Uuid> {
        self.client
            .query_one(
                "SELECT organization_id FROM public.calls WHERE id = $1",
                &[&call],
            )
            .await
            .expect("read call")
            .get(0)
    }

    /// `xmin` of every row of organizations and calls: unchanged means not written.
    pub async fn row_versions(&self) -> Vec<(Uuid, String)> {
        self.client
            .query(
                "SELECT id, xmin::text FROM public.organizations
                 UNION ALL SELECT id, xmin::text FROM public.calls ORDER BY 1",
                &[],
            )
            .await
            .expect("read xmin")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Hold the reconciler's advisory lock (default key) on a session of its own, as a running
    /// pass elsewhere would, until the returned client is dropped.
    #[allow(dead_code)] // not every test binary needs it
    pub async fn hold_reconciler_lock(&self) -> Client {
        let other = connect(&self.url).await;
        other
            .query(
                "SELECT pg_advisory_lock($1)",
                &[&7_356_172_090_143_225_001_i64],
            )
            .await
            .expect("take the advisory lock");
        other
    }

    /// Run the real binary against this database, settle time 0 unless `env` says otherwise.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_bin(args, &[("DATABASE_URL", self.url.as_str())], env).await
    }
}

/// What a run of the binary printed and returned.
#[derive(Debug)]
pub struct Run {
    pub output: Output,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// stderr lines containing `needle`, as `grep needle` would print them.
    pub fn grep(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }

    /// The run id of the pass, from its `reconcile pass finished` line.
    #[allow(dead_code)] // not every test binary looks at run ids
    pub fn run_id(&self) -> uuid::Uuid {
        let summary = self.grep("reconcile pass finished");
        let line = summary
            .first()
            .unwrap_or_else(|| panic!("no summary line:\n{}", self.stderr));
        line.split_whitespace()
            .find_map(|f| f.strip_prefix("run_id="))
            .expect("a run_id field")
            .parse()
            .expect("run_id is a uuid")
    }
}

/// The binary with a clean environment: only PATH, an empty config file (a machine's
/// /etc/synqall-reconciler/config.toml cannot leak in), and `env`, later entries winning.
fn binary<'a>(
    args: &[&str],
    env: impl IntoIterator<Item = &'a (&'a str, &'a str)>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SYNQALL_RECONCILER_CONFIG", empty_config_file());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Run the binary with a clean environment: only PATH, the given variables, and
/// `SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS=0` unless overridden.
pub async fn run_bin(args: &[&str], base_env: &[(&str, &str)], env: &[(&str, &str)]) -> Run {
    let settle_now = [("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "0")];
    let mut cmd = binary(args, settle_now.iter().chain(base_env).chain(env));
    let output = cmd
        .output()
        .await
        .expect("run the synqall-reconciler binary");
    let run = Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    };
    if std::env::var_os("TEST_LOG").is_some() {
        eprintln!(
            "$ synqall-reconciler {}\n{}{}-> exit {}",
            args.join(" "),
            run.stdout,
            run.stderr,
            run.code()
        );
    }
    run
}

/// An empty config file, so a machine's /etc/synqall-reconciler/config.toml cannot leak in.
pub fn empty_config_file() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-config.toml");
        std::fs::write(&path, "").expect("write an empty config file");
        path.display().to_string()
    })
}

/// A running daemon (`synqall-reconciler run`) whose stderr is collected line by line.
pub struct Daemon {
    child: tokio::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub pid: u32,
}

/// Defaults for daemon tests: a tick every second, no settle wait.
pub const FAST_DAEMON: &[(&str, &str)] = &[
    ("SYNQALL_RECONCILER__SCHEDULE__CRON", "* * * * * *"),
    ("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "0"),
];

impl Daemon {
    /// Start `run` against `url` with [`FAST_DAEMON`] overridden by `env`.
    pub fn start(url: &str, env: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};

        let target = [("DATABASE_URL", url)];
        let mut cmd = binary(&["run"], target.iter().chain(FAST_DAEMON).chain(env));
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start the daemon");
        let pid = child.id().expect("daemon pid");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[daemon {pid}] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines, pid }
    }

    /// Everything logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines containing `needle`.
    pub fn grep(&self, needle: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// Wait until at least `count` lines contain `needle`; panics with the log on timeout.
    pub async fn wait_for(&self, needle: &str, count: usize, timeout_secs: u64) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
        loop {
            let found = self.grep(needle);
            if found.len() >= count {
                return found;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "daemon {} logged {} of {count} lines with {needle:?} in {timeout_secs}s:\n{}",
                    self.pid,
                    found.len(),
                    self.lines().join("\n")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling a child process we spawned and still own.
        unsafe {
            libc::kill(self.pid as i32, signal);
        }
    }

    /// Wait for the process to exit; its exit code (None if killed by a signal).
    pub async fn wait(&mut self, timeout_secs: u64) -> Option<i32> {
        let status = tokio::time::timeout(
            std::time::Duration::from_secs(timeout_secs),
            self.child.wait(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "daemon {} did not exit within {timeout_secs}s:\n{}",
                self.pid,
                self.lines().join("\n")
            )
        })
        .expect("wait for the daemon");
        // Let the reader task drain what is left of stderr.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status.code()
    }
}
