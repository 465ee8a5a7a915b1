//! Exit codes and messages a person sees when something is wrong before any pass runs: bad
//! config (78, naming the key, before touching the database), an unreachable or unmigrated
//! database (1, no password in any output).

mod common;

use common::{run_bin, TestDb};

const SECRET: &str = "s3cr3t-pw-do-not-print";

fn unreachable_url() -> String {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    format!("postgres://reconciler:{SECRET}@127.0.0.1:1/postgres")
}

/// `--reconcile-now --config FILE` with `text` as the file, against an unreachable database.
async fn once_with_config_file(text: &str) -> common::Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    run_bin(
        &["--reconcile-now", "--config", path.to_str().unwrap()],
        &[("DATABASE_URL", unreachable_url().as_str())],
        &[],
    )
    .await
}

#[tokio::test]
async fn bad_config_value_exits_78_naming_the_key_before_touching_the_database() {
    let url = unreachable_url();
    let out = run_bin(
        &["--reconcile-now"],
        &[("DATABASE_URL", url.as_str())],
        &[("SYNQALL_RECONCILER__USAGE__PERIOD", "weekly")],
    )
    .await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("usage.period"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("connect"),
        "config is checked first: {}",
        out.stderr
    );
}

#[tokio::test]
async fn bad_config_with_json_logs_is_one_json_line() {
    let out = run_bin(
        &["--log-format", "json", "--reconcile-now"],
        &[("DATABASE_URL", unreachable_url().as_str())],
        &[("SYNQALL_RECONCILER__USAGE__PERIOD", "weekly")],
    )
    .await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    let event: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["exit_code"], 78);
    assert!(
        event["error"].as_str().unwrap().contains("usage.period"),
        "{event}"
    );
}

#[tokio::test]
async fn malformed_config_file_exits_78() {
    let out = once_with_config_file("[usage\nperiod = ").await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid configuration"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn unknown_key_and_out_of_range_values_exit_78_naming_the_key() {
    let out = once_with_config_file("[usage]\nsettle_secs = 5\n").await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("settle_secs"), "{}", out.stderr);

    let out = run_bin(
        &["--reconcile-now"],
        &[("DATABASE_URL", unreachable_url().as_str())],
        &[("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "-1")],
    )
    .await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("usage.settle_seconds"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn missing_database_url_exits_78() {
    let out = run_bin(&["--reconcile-now"], &[], &[]).await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("database.url"), "{}", out.stderr);
}

#[tokio::test]
async fn transaction_pooler_is_refused_with_exit_78() {
    let url = format!(
        "postgres://postgres.abc:{SECRET}@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
    );
    let out = run_bin(&["--reconcile-now"], &[("DATABASE_URL", url.as_str())], &[]).await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("transaction pooler"), "{}", out.stderr);
    assert!(!out.stderr.contains(SECRET) && !out.stdout.contains(SECRET));
}

#[tokio::test]
async fn unreachable_database_exits_1_without_printing_the_password() {
    for args in [&["--reconcile-now"][..], &["migrate"][..]] {
        let out = run_bin(args, &[("DATABASE_URL", unreachable_url().as_str())], &[]).await;
        assert_eq!(out.code(), 1, "{}", out.stderr);
        assert!(
            out.stderr
                .contains("Failed to connect to reconciler@127.0.0.1:1/postgres"),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(SECRET),
            "password leaked: {}",
            out.stderr
        );
        assert!(
            !out.stdout.contains(SECRET),
            "password leaked: {}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn database_url_from_a_file_or_systemd_credential_is_used() {
    let db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("database-url"), format!("{}\n", db.url)).unwrap();
    let file = dir.path().join("database-url").display().to_string();
    let out = run_bin(
        &["--reconcile-now"],
        &[],
        &[("SYNQALL_RECONCILER__DATABASE__URL_FILE", file.as_str())],
    )
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let credentials = dir.path().display().to_string();
    let out = run_bin(
        &["--reconcile-now"],
        &[],
        &[("CREDENTIALS_DIRECTORY", credentials.as_str())],
    )
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
}

#[tokio::test]
async fn unmigrated_database_exits_1_saying_to_run_migrate() {
    let db = TestDb::seeded().await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("synqall-reconciler migrate"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn connections_identify_themselves_and_carry_timeouts() {
    use synqall_reconciler::config::{Secret, Settings};
    use synqall_reconciler::db::DatabaseTarget;

    // While a real pass waits for drift to settle, its sessions are visible by name.
    let db = TestDb::migrated().await;
    db.org("Drifted", None).await;
    let url = db.url.clone();
    let pass = tokio::spawn(async move {
        run_bin(
            &["--reconcile-now"],
            &[("DATABASE_URL", url.as_str())],
            &[("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "3")],
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let sessions: i64 = db
        .scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'synqall-reconciler' AND datname = '{}'",
            db.name
        ))
        .await;
    assert!(sessions >= 2, "pool and lock connections, saw {sessions}");
    assert_eq!(pass.await.unwrap().code(), 0);

    // Their session settings, through the library's own pool.
    let settings = Settings::load_from(
        Some(std::path::Path::new(common::empty_config_file())),
        [(
            "SYNQALL_RECONCILER__DATABASE__STATEMENT_TIMEOUT_SECONDS".to_string(),
            "17".to_string(),
        )],
    )
    .unwrap();
    let target = DatabaseTarget::parse("test", Secret::new(db.url.clone())).unwrap();
    let pool = synqall_reconciler::db::Database::new(&target, &settings).unwrap();
    let client = pool.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'),
                    current_setting('lock_timeout')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "synqall-reconciler");
    assert_eq!(row.get::<_, &str>(1), "17s");
    assert_eq!(row.get::<_, &str>(2), "5s");
}

#[tokio::test]
async fn daemon_with_a_garbage_schedule_exits_78_naming_the_key() {
    let out = run_bin(
        &["run"],
        &[("DATABASE_URL", unreachable_url().as_str())],
        &[("SYNQALL_RECONCILER__SCHEDULE__CRON", "every five minutes")],
    )
    .await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("schedule.cron"), "{}", out.stderr);
}

#[tokio::test]
async fn commands_run_by_hand_find_the_credential_beside_the_config_file() {
    use std::os::unix::fs::PermissionsExt as _;
    // The package's layout: /etc/synqall-reconciler/{config.toml,database-url}, the URL file
    // root-only, the unit loading it as its credential. Run by hand (no CREDENTIALS_DIRECTORY,
    // no DATABASE_URL), the commands read the same file.
    let db = TestDb::seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let credential = dir.path().join("database-url");
    std::fs::write(&credential, format!("{}\n", db.url)).unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = config.to_str().unwrap();

    let out = run_bin(&["--config", config, "migrate"], &[], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let out = run_bin(&["--reconcile-now", "--config", config], &[], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let out = run_bin(&["status", "--config", config, "--json"], &[], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    assert!(status["last_success_at"].is_string(), "{status}");
    let out = run_bin(&["doctor", "--config", config], &[], &[]).await;
    assert!(matches!(out.code(), 0 | 2), "{}", out.stderr);
    assert!(out.stdout.contains("OK"), "{}", out.stdout);

    // The package creates the file empty: the error says what to write into it.
    std::fs::write(&credential, "\n").unwrap();
    let out = run_bin(&["status", "--config", config], &[], &[]).await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is empty: write the database URL into it"),
        "{}",
        out.stderr
    );

    // Without the file, the error says where it looked.
    std::fs::remove_file(&credential).unwrap();
    let out = run_bin(&["status", "--config", config], &[], &[]).await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(out.stderr.contains("database-url"), "{}", out.stderr);
}
