//! TLS against a real server with a certificate from a private CA (as Supabase's is): with the
//! CA in `database.ca_file` the connection works; without it, it fails closed with a message
//! that says what to do.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{cluster_with, run_bin};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use synqall_reconciler::fixture::execute_sql;
use synqall_reconciler::local_pg::{hand_to_server_user, ClusterOptions};

struct Pki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn make_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "synqall test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let ca = dir.path().join("ca.crt");
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&cert, server_cert.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    for path in [&cert, &key] {
        hand_to_server_user(path).unwrap();
    }
    Pki {
        _dir: dir,
        ca,
        cert,
        key,
    }
}

#[tokio::test]
async fn tls_works_with_the_ca_in_ca_file_and_fails_closed_without_it() {
    let pki = make_pki();
    let options = ClusterOptions {
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), pki.cert.display().to_string()),
            ("ssl_key_file".into(), pki.key.display().to_string()),
        ],
        ..ClusterOptions::default()
    };
    let (cluster, _) = cluster_with(options, "tls").await;
    // From now on the server accepts TCP connections only over TLS.
    std::fs::write(
        cluster.data_dir().join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
    )
    .unwrap();
    execute_sql(&cluster.url("postgres"), "SELECT pg_reload_conf()")
        .await
        .unwrap();

    let url = format!(
        "postgres://postgres:{}@localhost:{}/tls?sslmode=require",
        cluster.password(),
        cluster.port()
    );
    let without_ca = run_bin(&["migrate"], &[("DATABASE_URL", url.as_str())], &[]).await;
    assert_eq!(without_ca.code(), 1, "{}", without_ca.stderr);
    assert!(
        without_ca.stderr.contains("certificate") && without_ca.stderr.contains("database.ca_file"),
        "{}",
        without_ca.stderr
    );

    let ca = pki.ca.display().to_string();
    let with_ca = [("SYNQALL_RECONCILER__DATABASE__CA_FILE", ca.as_str())];
    let migrated = run_bin(&["migrate"], &[("DATABASE_URL", url.as_str())], &with_ca).await;
    assert_eq!(migrated.code(), 0, "{}", migrated.stderr);
    let pass = run_bin(
        &["--reconcile-now"],
        &[("DATABASE_URL", url.as_str())],
        &with_ca,
    )
    .await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);

    // libpq's spelling works too: sslmode=verify-full with the CA in sslrootcert.
    let libpq = format!(
        "postgres://postgres:{}@localhost:{}/tls?sslmode=verify-full&sslrootcert={}",
        cluster.password(),
        cluster.port(),
        pki.ca.display()
    );
    let pass = run_bin(
        &["--reconcile-now"],
        &[("DATABASE_URL", libpq.as_str())],
        &[],
    )
    .await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    let bogus = format!(
        "postgres://postgres:{}@localhost:{}/tls?sslmode=sometimes",
        cluster.password(),
        cluster.port()
    );
    let out = run_bin(
        &["--reconcile-now"],
        &[("DATABASE_URL", bogus.as_str())],
        &[],
    )
    .await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("option `sslmode`"), "{}", out.stderr);

    let not_pem = run_bin(
        &["--reconcile-now"],
        &[("DATABASE_URL", url.as_str())],
        &[("SYNQALL_RECONCILER__DATABASE__CA_FILE", "/etc/hostname")],
    )
    .await;
    assert_eq!(not_pem.code(), 78, "{}", not_pem.stderr);
    assert!(
        not_pem.stderr.contains("database.ca_file"),
        "{}",
        not_pem.stderr
    );
}

#[tokio::test]
async fn plaintext_to_a_remote_host_is_refused_as_bad_config() {
    let out = run_bin(
        &["--reconcile-now"],
        &[(
            "DATABASE_URL",
            "postgres://u:pw@db.example.invalid:5432/postgres?sslmode=disable",
        )],
        &[],
    )
    .await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("TLS is required"), "{}", out.stderr);
}
