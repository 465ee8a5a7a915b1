//! Running the real binary: one-shot commands ([`run_bin`], returning a [`Run`] with exit
//! code and output) and daemons ([`Daemon`], whose stderr is collected line by line), each with
//! a clean environment so nothing of the machine's leaks in.

use std::process::Output;
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_synqall-reconciler");

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
