//! A real pgbouncer (the Debian package) in front of a test cluster, in session or transaction
//! mode, on a free loopback port. pgbouncer refuses to run as root: as root it runs as the
//! `postgres` user, like the cluster. Missing pgbouncer is a failure saying what to install.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synqall_reconciler::local_pg::LocalCluster;

/// A running pgbouncer; dropping it stops it.
pub struct PgBouncer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn pgbouncer_binary() -> PathBuf {
    for candidate in ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"] {
        if std::path::Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    panic!("pgbouncer not found: install it (apt-get install -y pgbouncer); .ci/run does");
}

/// The uid/gid of the `postgres` user, when we are root.
fn postgres_identity() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam returns static storage we copy at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

impl PgBouncer {
    /// pgbouncer in `pool_mode` ("session" or "transaction") for every database of `cluster`,
    /// authenticating `postgres` with the cluster's password (scram both ways).
    pub fn start(cluster: &LocalCluster, pool_mode: &str) -> Self {
        let binary = pgbouncer_binary();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let userlist = dir.path().join("userlist.txt");
        std::fs::write(
            &userlist,
            format!("\"{}\" \"{}\"\n", cluster.superuser(), cluster.password()),
        )
        .unwrap();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={cluster_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = scram-sha-256\nauth_file = {userlist}\npool_mode = {pool_mode}\n\
                 max_client_conn = 200\ndefault_pool_size = 20\n\
                 logfile = {log}\npidfile = {pid}\n",
                cluster_port = cluster.port(),
                userlist = userlist.display(),
                log = dir.path().join("pgbouncer.log").display(),
                pid = dir.path().join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(binary);
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = postgres_identity() {
            for path in [dir.path().to_path_buf(), userlist.clone(), ini.clone()] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("start pgbouncer");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// A URL to `database` through this pgbouncer, as the cluster's superuser.
    pub fn url(&self, cluster: &LocalCluster, database: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{database}",
            cluster.superuser(),
            cluster.password(),
            self.port
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
