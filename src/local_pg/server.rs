//! The server process of a throwaway cluster: `initdb`, starting `postgres` with the cluster's
//! settings and waiting until it answers, stopping it, and the keeper thread that owns the
//! process (its parent-death signal is tied to that thread, see the parent module's docs).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{io_err, LocalPgError};
use super::options::ClusterOptions;

/// How long to wait for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the keeper thread needs to (re)start the server.
#[derive(Debug, Clone)]
pub(super) struct ServerSpec {
    pub(super) bindir: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) log_file: PathBuf,
    pub(super) port: u16,
    pub(super) identity: Option<(u32, u32)>,
    pub(super) options: ClusterOptions,
}

impl ServerSpec {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.current_dir(self.data_dir.parent().unwrap_or(Path::new("/")));
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        if let Some((uid, gid)) = self.identity {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// `initdb`: the bootstrap superuser gets `password`; TCP connections need it
    /// (scram-sha-256), the Unix socket (in a directory only the server's user may enter) is
    /// trusted. So while a cluster runs, no other local user can log in to it.
    pub(super) fn initdb(&self, password: &str) -> Result<(), LocalPgError> {
        let pwfile = self.data_dir.with_extension("pw");
        fs::write(&pwfile, password).map_err(io_err("writing the password file"))?;
        if let Some((uid, gid)) = self.identity {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(io_err("handing the password file to postgres"))?;
        }
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))
            .map_err(io_err("restricting the password file"))?;
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", &self.options.superuser])
            .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--no-sync", "--locale=C"])
            .output()
            .map_err(io_err("running initdb"));
        let _ = fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            return Err(LocalPgError::Command {
                what: "initdb".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// This spec's data directory as a streaming standby of `primary` (`pg_basebackup -R`).
    pub(super) fn base_backup_of(&self, primary: &ServerSpec) -> Result<(), LocalPgError> {
        let out = self
            .command("pg_basebackup")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-h")
            .arg(&primary.socket_dir)
            .args(["-p", &primary.port.to_string()])
            .args(["-U", &primary.options.superuser])
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"])
            .output()
            .map_err(io_err("running pg_basebackup"))?;
        if !out.status.success() {
            return Err(LocalPgError::Command {
                what: "pg_basebackup".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn spawn(&self) -> Result<Child, LocalPgError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(io_err("opening the server log"))?;
        let log2 = log.try_clone().map_err(io_err("opening the server log"))?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(&self.data_dir);
        cmd.args(["-p", &self.port.to_string()]);
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            (
                "unix_socket_directories".into(),
                self.socket_dir.display().to_string(),
            ),
            ("max_connections".into(), "300".into()),
        ];
        if self.options.unsafe_fast {
            for (k, v) in [("fsync", "off"), ("full_page_writes", "off")] {
                settings.push((k.into(), v.into()));
            }
        }
        settings.extend(self.options.settings.iter().cloned());
        for (k, v) in settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        // Own process group: a Ctrl-C in the terminal reaches us, and we stop the server.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; this runs in the forked child after the uid
        // switch (std runs pre_exec closures last), so the setting survives until exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(io_err("starting postgres"))?;
        self.wait_ready(&mut child)?;
        Ok(child)
    }

    fn wait_ready(&self, child: &mut Child) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LocalPgError::Command {
                    what: "postgres".into(),
                    detail: format!(
                        "exited with {status} during start-up; log: {}",
                        self.log_tail()
                    ),
                });
            }
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(LocalPgError::Command {
                    what: "postgres".into(),
                    detail: format!(
                        "not ready after {START_TIMEOUT:?}; log: {}",
                        self.log_tail()
                    ),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join(" | ")
    }
}

/// Stop a running server the way `pg_ctl stop -m immediate` does (SIGQUIT), or fast (SIGINT).
pub(super) fn stop_child(child: &mut Child, immediate: bool) {
    let signal = if immediate {
        libc::SIGQUIT
    } else {
        libc::SIGINT
    };
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(super) enum KeeperCmd {
    Start(mpsc::Sender<Result<(), LocalPgError>>),
    Stop {
        immediate: bool,
        done: mpsc::Sender<()>,
    },
    Exit,
}

/// Owns the server process. Lives as long as the cluster: the server's parent-death signal is
/// tied to this thread.
pub(super) fn keeper_loop(spec: ServerSpec, rx: mpsc::Receiver<KeeperCmd>) {
    let mut child: Option<Child> = None;
    while let Ok(cmd) = rx.recv() {
        match cmd {
            KeeperCmd::Start(reply) => {
                let result = match child {
                    Some(_) => Ok(()),
                    None => spec.spawn().map(|c| child = Some(c)),
                };
                let _ = reply.send(result);
            }
            KeeperCmd::Stop { immediate, done } => {
                if let Some(mut c) = child.take() {
                    stop_child(&mut c, immediate);
                }
                let _ = done.send(());
            }
            KeeperCmd::Exit => break,
        }
    }
    if let Some(mut c) = child.take() {
        stop_child(&mut c, true);
    }
}
