//! A throwaway local PostgreSQL cluster: `initdb` into a temporary directory, start `postgres`
//! on a free loopback port, stop it, remove everything. Used by `demo` and by the test harness.
//!
//! Private while it runs: TCP logins need the bootstrap superuser's random password
//! (scram-sha-256), and the trusted Unix socket lies in a directory only the server's user may
//! enter; no other local user can log in to it.
//!
//! Two details make it safe to use from tests and from a Ctrl-C'd demo:
//! - The server is spawned from a dedicated *keeper* thread with `PR_SET_PDEATHSIG`, so the kernel
//!   kills it when that thread ends, which for a cluster that is never dropped (a test binary's
//!   shared cluster) is when the process exits, however it exits.
//! - Data directories are named `synqall-pg-<pid>-…`; a new cluster removes those whose process
//!   is gone, so a killed run leaves nothing behind for long.
//!
//! `initdb` and `postgres` refuse to run as root: as root, both run as the `postgres` user and
//! the directory is handed to it.

mod error;
mod options;
mod server;

use std::ffi::CString;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use self::error::io_err;
pub use self::error::LocalPgError;
pub use self::options::ClusterOptions;
use self::server::{keeper_loop, KeeperCmd, ServerSpec};

/// Prefix of every data directory this module creates under the system temp dir.
const DIR_PREFIX: &str = "synqall-pg-";
/// Where to find `initdb`, `postgres` and `pg_isready`: `$PG_BINDIR`, then `pg_config --bindir`,
/// then the newest `/usr/lib/postgresql/*/bin`.
///
/// # Errors
/// [`LocalPgError::BinariesNotFound`] naming the package to install.
pub fn find_bindir() -> Result<PathBuf, LocalPgError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(LocalPgError::BinariesNotFound)
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, dir)| dir)
        .ok_or(LocalPgError::BinariesNotFound)
}

/// The uid/gid to run the server as: `postgres` when we are root, ourselves otherwise.
fn server_identity() -> Result<Option<(u32, u32)>, LocalPgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("static name has no NUL");
    // SAFETY: getpwnam returns NULL or a pointer to static storage valid until the next call;
    // we copy the two integers out immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(LocalPgError::NoPostgresUser);
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// Remove data directories left by processes that no longer exist (killed test runs).
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Make `path` owned by the user the server runs as (needed for files the server reads, such
/// as TLS keys, when we run as root). A no-op when not root.
///
/// # Errors
/// No `postgres` user, or chown failed.
pub fn hand_to_server_user(path: &Path) -> Result<(), LocalPgError> {
    if let Some((uid, gid)) = server_identity()? {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(io_err("handing a file to the postgres user"))?;
    }
    Ok(())
}

fn free_loopback_port() -> Result<u16, LocalPgError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

/// A running throwaway cluster; dropping it stops the server and removes its directory.
pub struct LocalCluster {
    spec: ServerSpec,
    root: PathBuf,
    /// The bootstrap superuser's password (TCP logins need it).
    password: String,
    keeper: Option<(mpsc::Sender<KeeperCmd>, thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("port", &self.spec.port)
            .field("root", &self.root)
            .finish()
    }
}

impl LocalCluster {
    /// `initdb` a new cluster in a temporary directory and start it with default options.
    ///
    /// # Errors
    /// Missing binaries (naming the package), `initdb` or start-up failures with the server's
    /// last log lines.
    pub fn start() -> Result<Self, LocalPgError> {
        Self::start_with(ClusterOptions::default())
    }

    /// Like [`LocalCluster::start`] with explicit options.
    ///
    /// # Errors
    /// As [`LocalCluster::start`].
    pub fn start_with(options: ClusterOptions) -> Result<Self, LocalPgError> {
        let bindir = find_bindir()?;
        let identity = server_identity()?;
        sweep_stale_dirs();
        let root = fresh_root("creating the cluster directory")?;
        let spec = ServerSpec {
            data_dir: PathBuf::new(),
            socket_dir: PathBuf::new(),
            log_file: PathBuf::new(),
            port: 0,
            bindir,
            identity,
            options,
        }
        .placed_in(&root)?;
        let mut cluster = Self {
            spec,
            root,
            keeper: None,
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        cluster.prepare_dirs()?;
        cluster.spec.initdb(&cluster.password)?;
        cluster.spawn_keeper()?;
        Ok(cluster)
    }

    /// A hot standby of this cluster on the same machine: `pg_basebackup -R` (streaming, over
    /// the primary's trusted socket), then started on a port of its own. It takes read-only
    /// connections with the primary's roles and passwords, and replays what the primary writes.
    ///
    /// # Errors
    /// `pg_basebackup` or the standby's start-up failed.
    pub fn start_standby(&self) -> Result<Self, LocalPgError> {
        let root = fresh_root("creating the standby directory")?;
        let spec = self.spec.clone().placed_in(&root)?;
        let mut standby = Self {
            spec,
            root,
            keeper: None,
            password: self.password.clone(),
        };
        standby.prepare_dirs()?;
        standby.spec.base_backup_of(&self.spec)?;
        standby.spawn_keeper()?;
        Ok(standby)
    }

    fn prepare_dirs(&self) -> Result<(), LocalPgError> {
        fs::create_dir_all(&self.spec.socket_dir).map_err(io_err("creating the socket dir"))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting directory permissions"))?;
        // The socket is trusted: only the server's user (and root) may reach it.
        fs::set_permissions(&self.spec.socket_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting directory permissions"))?;
        if let Some((uid, gid)) = self.spec.identity {
            for dir in [&self.root, &self.spec.socket_dir] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(io_err("handing the cluster directory to postgres"))?;
            }
        }
        Ok(())
    }

    fn spawn_keeper(&mut self) -> Result<(), LocalPgError> {
        let (tx, rx) = mpsc::channel::<KeeperCmd>();
        let spec = self.spec.clone();
        let handle = thread::Builder::new()
            .name("local-pg-keeper".into())
            .spawn(move || keeper_loop(spec, rx))
            .map_err(io_err("spawning the keeper thread"))?;
        self.keeper = Some((tx, handle));
        self.start_server()
    }

    fn send(&self, cmd: KeeperCmd) -> Result<(), LocalPgError> {
        let (tx, _) = self.keeper.as_ref().ok_or(LocalPgError::KeeperGone)?;
        tx.send(cmd).map_err(|_| LocalPgError::KeeperGone)
    }

    /// Start the server again after [`LocalCluster::stop`] (same port, same data).
    ///
    /// # Errors
    /// The server did not come up.
    pub fn start_server(&self) -> Result<(), LocalPgError> {
        let (tx, rx) = mpsc::channel();
        self.send(KeeperCmd::Start(tx))?;
        rx.recv().map_err(|_| LocalPgError::KeeperGone)?
    }

    /// Stop the server; `immediate` is a crash-like stop (no checkpoint), as a power cut would.
    ///
    /// # Errors
    /// The keeper thread is gone.
    pub fn stop_server(&self, immediate: bool) -> Result<(), LocalPgError> {
        let (tx, rx) = mpsc::channel();
        self.send(KeeperCmd::Stop {
            immediate,
            done: tx,
        })?;
        rx.recv().map_err(|_| LocalPgError::KeeperGone)
    }

    /// Restart the server in place: every open connection is cut.
    ///
    /// # Errors
    /// As [`LocalCluster::start_server`].
    pub fn restart_server(&self) -> Result<(), LocalPgError> {
        self.stop_server(true)?;
        self.start_server()
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// Directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.spec.socket_dir
    }

    /// Directory holding the data, the socket and the server log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A connection URL for `database` as the bootstrap superuser, over TCP on 127.0.0.1 with
    /// its (random, per-cluster) password.
    pub fn url(&self, database: &str) -> String {
        self.url_as(&self.spec.options.superuser, &self.password, database)
    }

    /// A connection URL for `database` as `user` with `password` (127.0.0.1, scram).
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.spec.port
        )
    }

    /// The bootstrap superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The bootstrap superuser's name.
    pub fn superuser(&self) -> &str {
        &self.spec.options.superuser
    }

    /// The data directory (holds `pg_hba.conf` and `postgresql.conf`).
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    /// The binaries directory in use (for `psql` and friends).
    pub fn bindir(&self) -> &Path {
        &self.spec.bindir
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.keeper.take() {
            let _ = tx.send(KeeperCmd::Exit);
            let _ = handle.join();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A new cluster directory (kept: the cluster removes it when dropped).
fn fresh_root(what: &'static str) -> Result<PathBuf, LocalPgError> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(io_err(what))?
        .keep())
}

impl ServerSpec {
    /// This spec with its data, socket and log in `root`, on a free loopback port.
    fn placed_in(self, root: &Path) -> Result<Self, LocalPgError> {
        Ok(Self {
            data_dir: root.join("data"),
            socket_dir: root.join("socket"),
            log_file: root.join("postgres.log"),
            port: free_loopback_port()?,
            ..self
        })
    }
}
