//! The configuration traps an operator falls into, each refused (exit 78, naming the key or
//! variable, before any connection) or warned about: a one-underscore variable, an unreadable
//! file, a 5-field cron that means hours, macros, fractional and out-of-range numbers, a zero
//! lock timeout, a world-readable file holding the URL, a public metrics listener, a negative
//! `--limit`.

mod common;

use common::run_bin;

/// Nothing listens on port 1 of loopback: a run that gets past its configuration fails to
/// connect (exit 1), which is how the tests tell "accepted" from "refused" (78).
const UNREACHABLE: &str = "postgres://reconciler:pw@127.0.0.1:1/postgres";

async fn once(env: &[(&str, &str)]) -> common::Run {
    run_bin(&["--reconcile-now"], &[("DATABASE_URL", UNREACHABLE)], env).await
}

fn assert_refused(out: &common::Run, needles: &[&str]) {
    assert_eq!(out.code(), 78, "{}", out.stderr);
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("connect"),
        "configuration is checked before any connection:\n{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_variable_with_one_underscore_is_refused_and_named() {
    let out = once(&[("SYNQALL_RECONCILER_USAGE__SETTLE_SECONDS", "5")]).await;
    assert_refused(
        &out,
        &[
            "SYNQALL_RECONCILER_USAGE__SETTLE_SECONDS",
            "SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS",
        ],
    );
    // The documented variables are not caught by the same net.
    let out = once(&[("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "5")]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
}

#[tokio::test]
async fn an_unreadable_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for path in [missing.as_path(), dir.path()] {
        let path = path.to_str().unwrap();
        let out = run_bin(
            &["--reconcile-now", "--config", path],
            &[("DATABASE_URL", UNREACHABLE)],
            &[],
        )
        .await;
        assert_refused(&out, &[path]);
    }
}

#[tokio::test]
async fn a_five_field_cron_of_every_five_hours_is_refused_with_the_fix() {
    let out = once(&[("SYNQALL_RECONCILER__SCHEDULE__CRON", "0 */5 * * *")]).await;
    assert_refused(
        &out,
        &[
            "schedule.cron",
            "minute hour day month weekday",
            "alert.stalled_after_seconds",
            "Did you mean `*/5 * * * *`?",
        ],
    );
    // What it suggests is accepted.
    let out = once(&[("SYNQALL_RECONCILER__SCHEDULE__CRON", "*/5 * * * *")]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
}

#[tokio::test]
async fn cron_macros_mean_what_cron_means() {
    // @hourly is accepted when the stall alert allows an hour between passes...
    let out = once(&[
        ("SYNQALL_RECONCILER__SCHEDULE__CRON", "@hourly"),
        ("SYNQALL_RECONCILER__ALERT__STALLED_AFTER_SECONDS", "7200"),
    ])
    .await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    // ...and refused against the default 30 minutes, saying how far apart it runs.
    let out = once(&[("SYNQALL_RECONCILER__SCHEDULE__CRON", "@hourly")]).await;
    assert_refused(&out, &["schedule.cron", "3600 s apart"]);
    let out = once(&[("SYNQALL_RECONCILER__SCHEDULE__CRON", "@often")]).await;
    assert_refused(&out, &["schedule.cron", "@hourly"]);
}

#[tokio::test]
async fn fractional_zero_and_out_of_range_numbers_are_refused_naming_the_key() {
    for (variable, value, key) in [
        (
            "SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS",
            "1.5",
            "usage.settle_seconds",
        ),
        (
            "SYNQALL_RECONCILER__USAGE__BATCH_SIZE",
            "-3",
            "usage.batch_size",
        ),
        (
            "SYNQALL_RECONCILER__LOCK__KEY",
            "9223372036854775808",
            "lock.key",
        ),
        (
            "SYNQALL_RECONCILER__DATABASE__LOCK_TIMEOUT_SECONDS",
            "0",
            "database.lock_timeout_seconds",
        ),
        (
            "SYNQALL_RECONCILER__ALERT__MAX_CRITICAL_LINES_PER_PASS",
            "0",
            "alert.max_critical_lines_per_pass",
        ),
        (
            "SYNQALL_RECONCILER__DATABASE__SWEEP_WORK_MEM_MB",
            "0",
            "database.sweep_work_mem_mb",
        ),
        (
            "SYNQALL_RECONCILER__DATABASE__SWEEP_WORK_MEM_MB",
            "4096",
            "database.sweep_work_mem_mb",
        ),
    ] {
        let out = once(&[(variable, value)]).await;
        assert_refused(&out, &[key]);
    }
    // The same in a file (run_bin sets settle_seconds in the environment, which would win): TOML
    // floats are not rounded either.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[usage]\nbatch_size = 2.5\n").unwrap();
    let out = run_bin(
        &["--reconcile-now", "--config", path.to_str().unwrap()],
        &[("DATABASE_URL", UNREACHABLE)],
        &[],
    )
    .await;
    assert_refused(&out, &["usage.batch_size", "not a whole number"]);
}

#[tokio::test]
async fn a_world_readable_file_holding_the_url_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("[database]\nurl = \"{UNREACHABLE}\"\n")).unwrap();
    let args = ["--reconcile-now", "--config", path.to_str().unwrap()];

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_bin(&args, &[], &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let warned = out.grep("readable by every local user");
    assert_eq!(warned.len(), 1, "{}", out.stderr);
    assert!(warned[0].contains(" WARN "), "{}", warned[0]);
    assert!(warned[0].contains(path.to_str().unwrap()), "{}", warned[0]);
    assert!(
        !out.stderr.contains(":pw@"),
        "the URL is never printed: {}",
        out.stderr
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_bin(&args, &[], &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(
        out.grep("readable by every local user").is_empty(),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_metrics_listener_on_a_public_address_is_warned_about() {
    let out = once(&[("SYNQALL_RECONCILER__METRICS__LISTEN", "0.0.0.0:9464")]).await;
    let warned = out.grep("not a loopback address");
    assert_eq!(warned.len(), 1, "{}", out.stderr);
    assert!(warned[0].contains(" WARN "), "{}", warned[0]);
    let out = once(&[("SYNQALL_RECONCILER__METRICS__LISTEN", "127.0.0.1:9464")]).await;
    assert!(
        out.grep("not a loopback address").is_empty(),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_negative_status_limit_is_a_usage_error() {
    let out = run_bin(
        &["status", "--limit", "-1"],
        &[("DATABASE_URL", UNREACHABLE)],
        &[],
    )
    .await;
    assert_eq!(out.code(), 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("--limit") && out.stderr.contains("-1"),
        "{}",
        out.stderr
    );
}
