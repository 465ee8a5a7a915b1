//! `migrate` on the two starting points production can be in (seed SQL run by hand, or never),
//! and the hardened `increment_used_minutes` against the attacks the seed's version allowed.

mod common;

use common::{connect, TestDb};
use synqall_reconciler::db::migrations;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

const FUNCTION: &str = "public.increment_used_minutes(uuid,integer)";

/// Call the function as an API role, with JWT claims as PostgREST sets them.
async fn increment_as(
    db: &TestDb,
    role: &str,
    sub: Option<Uuid>,
    org: Option<Uuid>,
    minutes: Option<i32>,
) -> Result<(), tokio_postgres::Error> {
    let client = connect(&db.url).await;
    client
        .batch_execute(&format!("SET ROLE {role}"))
        .await
        .unwrap();
    if let Some(sub) = sub {
        let claims = format!(r#"{{"sub":"{sub}","role":"{role}"}}"#);
        client
            .execute(
                "SELECT set_config('request.jwt.claims', $1, false)",
                &[&claims],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "SELECT public.increment_used_minutes($1, $2)",
            &[&org, &minutes],
        )
        .await
        .map(|_| ())
}

fn code(result: Result<(), tokio_postgres::Error>) -> SqlState {
    result
        .expect_err("the call should have failed")
        .code()
        .cloned()
        .expect("a database error with a SQLSTATE")
}

async fn can_execute(db: &TestDb, role: &str) -> bool {
    db.scalar(&format!(
        "SELECT has_function_privilege('{role}', '{FUNCTION}', 'EXECUTE')"
    ))
    .await
}

/// The state `migrate` must leave, whatever it started from.
async fn assert_hardened(db: &TestDb) {
    assert!(!can_execute(db, "anon").await, "anon can execute");
    assert!(can_execute(db, "authenticated").await);
    assert!(can_execute(db, "service_role").await);
    // grantee 0 is PUBLIC; a NULL ACL means the default, which grants PUBLIC EXECUTE.
    let public_grant: bool = db
        .scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p,
                                  aclexplode(COALESCE(p.proacl, acldefault('f', p.proowner))) a
                             WHERE p.oid = '{FUNCTION}'::regprocedure AND a.grantee = 0)"
        ))
        .await;
    assert!(!public_grant, "PUBLIC can execute");
    let (definer, config): (bool, Vec<String>) = {
        let row = db
            .client
            .query_one(
                &format!("SELECT prosecdef, proconfig FROM pg_proc WHERE oid = '{FUNCTION}'::regprocedure"),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(definer);
    assert_eq!(config, vec![r#"search_path="""#.to_string()]);
    let column: i64 = db
        .scalar(
            "SELECT count(*) FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = 'organizations' AND column_name = 'used_minutes'",
        )
        .await;
    assert_eq!(column, 1);
    for role in ["anon", "authenticated"] {
        let usage: bool = db
            .scalar(&format!(
                "SELECT has_schema_privilege('{role}', 'reconciler', 'USAGE')"
            ))
            .await;
        assert!(!usage, "{role} can use schema reconciler");
    }
    let without_rls: i64 = db
        .scalar(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'reconciler' AND c.relkind = 'r' AND NOT c.relrowsecurity",
        )
        .await;
    assert_eq!(without_rls, 0, "reconciler tables without RLS");
}

#[tokio::test]
async fn migrate_applies_to_a_database_that_never_saw_the_seed_and_is_a_noop_twice() {
    let db = TestDb::bare().await;
    let first = db.run(&["migrate"], &[]).await;
    assert_eq!(first.code(), 0, "{}", first.stderr);
    let applied_lines: Vec<&str> = first
        .stdout
        .lines()
        .filter(|l| l.starts_with("applied "))
        .collect();
    assert_eq!(
        applied_lines,
        [
            "applied V1__usage_tracking_fix",
            "applied V2__reconciler_journal",
            "applied V3__reconciler_role",
            "applied V4__revert_and_periods",
            "applied V5__safety",
            "applied V6__lease",
            "applied V7__ledger_mismatches",
            "applied V8__incremental",
            "applied V9__trigger_plans",
            "applied V10__change_log_partitions"
        ]
    );
    // Everything else is what the server said, under the migration that made it say so.
    for line in first.stdout.lines().filter(|l| !l.starts_with("applied ")) {
        assert!(
            line.starts_with("  NOTICE: ") || line.starts_with("  WARNING: "),
            "{line}"
        );
    }
    assert_hardened(&db).await;

    let second = db.run(&["migrate"], &[]).await;
    assert_eq!(second.code(), 0, "{}", second.stderr);
    assert_eq!(second.stdout, "", "second migrate applied something");
    assert!(
        second.stderr.contains("nothing to apply"),
        "{}",
        second.stderr
    );
    let applied: i64 = db
        .scalar("SELECT count(*) FROM reconciler.schema_migrations")
        .await;
    assert_eq!(applied, migrations::MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn migrate_applies_where_the_seed_sql_already_ran_and_keeps_its_data() {
    let db = TestDb::seeded().await;
    let org = db.org("Seeded", Some(42)).await;
    // The exploit the seed shipped: anon may run it, with a negative number.
    increment_as(&db, "anon", None, Some(org), Some(-40))
        .await
        .expect("seed lets anon subtract");
    assert_eq!(db.used_minutes(org).await, Some(2));

    let out = db.run(&["migrate"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_hardened(&db).await;
    assert_eq!(
        db.used_minutes(org).await,
        Some(2),
        "migrate does not touch counters"
    );
    assert_eq!(
        code(increment_as(&db, "anon", None, Some(org), Some(-40)).await),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
}

#[tokio::test]
async fn increment_rejects_bad_input_and_unknown_organizations() {
    let db = TestDb::migrated().await;
    let org = db.org("Acme", Some(0)).await;
    for minutes in [None, Some(0), Some(-5)] {
        assert_eq!(
            code(increment_as(&db, "service_role", None, Some(org), minutes).await),
            SqlState::INVALID_PARAMETER_VALUE,
            "minutes {minutes:?}"
        );
    }
    assert_eq!(
        code(increment_as(&db, "service_role", None, None, Some(5)).await),
        SqlState::NULL_VALUE_NOT_ALLOWED
    );
    assert_eq!(
        code(increment_as(&db, "service_role", None, Some(Uuid::new_v4()), Some(5)).await),
        SqlState::NO_DATA_FOUND
    );
    assert_eq!(db.used_minutes(org).await, Some(0));
    // Overflow is an error, not a wrap-around.
    db.exec(&format!(
        "UPDATE public.organizations SET used_minutes = 2147483600 WHERE id = '{org}'"
    ))
    .await;
    assert_eq!(
        code(increment_as(&db, "service_role", None, Some(org), Some(100)).await),
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE
    );
}

#[tokio::test]
async fn authenticated_adds_only_to_its_own_organization_service_role_to_any() {
    let db = TestDb::migrated().await;
    let mine = db.org("Mine", Some(0)).await;
    let theirs = db.org("Theirs", Some(0)).await;
    let user = db.user().await;
    db.member(user, mine, 10).await;

    increment_as(&db, "authenticated", Some(user), Some(mine), Some(3))
        .await
        .expect("member may add to its organization");
    assert_eq!(
        code(increment_as(&db, "authenticated", Some(user), Some(theirs), Some(3)).await),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(
        code(increment_as(&db, "authenticated", None, Some(mine), Some(3)).await),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "no JWT subject, no membership"
    );
    assert_eq!(
        code(increment_as(&db, "anon", None, Some(mine), Some(3)).await),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    increment_as(&db, "service_role", None, Some(theirs), Some(4))
        .await
        .expect("service_role may add to any organization");
    assert_eq!(db.used_minutes(mine).await, Some(3));
    assert_eq!(db.used_minutes(theirs).await, Some(4));
}

/// A caller who controls its search_path puts look-alike objects first.
const SHADOW_SQL: &str = "
    CREATE SCHEMA evil;
    GRANT USAGE ON SCHEMA evil TO PUBLIC;
    CREATE TABLE evil.organizations (id uuid, used_minutes integer, updated_at timestamptz);
    GRANT ALL ON evil.organizations TO PUBLIC;
    CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '1999-01-01'::timestamptz $$;
";

async fn increment_with_shadowing_path(db: &TestDb, org: Uuid) {
    let client = connect(&db.url).await;
    client
        .batch_execute("SET ROLE service_role; SET search_path = evil, pg_catalog, public;")
        .await
        .unwrap();
    client
        .execute("SELECT public.increment_used_minutes($1, 5)", &[&org])
        .await
        .expect("increment");
}

#[tokio::test]
async fn shadowing_objects_on_the_callers_search_path_change_nothing() {
    // The seed's function resolves names through the caller's search_path: it is fooled.
    let seeded = TestDb::seeded().await;
    let org = seeded.org("Target", Some(10)).await;
    seeded.exec(SHADOW_SQL).await;
    seeded
        .exec(&format!(
            "INSERT INTO evil.organizations VALUES ('{org}', 0, NULL)"
        ))
        .await;
    increment_with_shadowing_path(&seeded, org).await;
    assert_eq!(
        seeded.used_minutes(org).await,
        Some(10),
        "seed function updated the real row?"
    );

    // After migrate, the same call updates the real row and uses the real now().
    let db = TestDb::migrated().await;
    let org = db.org("Target", Some(10)).await;
    db.exec(SHADOW_SQL).await;
    db.exec(&format!(
        "INSERT INTO evil.organizations VALUES ('{org}', 0, NULL)"
    ))
    .await;
    increment_with_shadowing_path(&db, org).await;
    assert_eq!(db.used_minutes(org).await, Some(15));
    let shadow: i32 = db
        .scalar("SELECT used_minutes FROM evil.organizations")
        .await;
    assert_eq!(shadow, 0, "the shadow table was written");
    let fresh: bool = db
        .scalar(&format!(
            "SELECT updated_at > now() - interval '1 minute' FROM public.organizations WHERE id = '{org}'"
        ))
        .await;
    assert!(fresh, "updated_at came from a shadowing now()");
}

#[tokio::test]
async fn migrate_fails_fast_instead_of_queueing_behind_a_long_transaction() {
    let db = TestDb::bare().await;
    let holder = connect(&db.url).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE public.organizations IN ACCESS SHARE MODE;")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let out = db.run(&["migrate"], &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        out.stderr.contains("V1__usage_tracking_fix"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("lock timeout"), "{}", out.stderr);
    holder.batch_execute("ROLLBACK").await.unwrap();

    let out = db.run(&["migrate"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_hardened(&db).await;
}

#[tokio::test]
async fn a_migration_edited_after_it_was_applied_is_refused() {
    let db = TestDb::migrated().await;
    db.exec("UPDATE reconciler.schema_migrations SET checksum = 'tampered' WHERE version = 1")
        .await;
    for args in [&["migrate"][..], &["--reconcile-now"][..]] {
        let out = db.run(args, &[]).await;
        assert_eq!(out.code(), 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("was changed after it was applied"),
            "{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn v10_keeps_the_log_rows_v8_had_not_consumed_and_the_app_writes_on() {
    let db = TestDb::bare().await;
    // A V9 install, as `migrate` left it before V10 (every migration is re-runnable, so the
    // runner applies V1–V9 again over them, harmlessly, then V10). The runner creates the
    // schema and its history table first (src/db/migrations.rs, BOOTSTRAP_SQL).
    db.exec(
        "CREATE SCHEMA IF NOT EXISTS reconciler;
         CREATE TABLE IF NOT EXISTS reconciler.schema_migrations (
           version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT pg_catalog.now());",
    )
    .await;
    for sql in [
        include_str!("../migrations/V1__usage_tracking_fix.sql"),
        include_str!("../migrations/V2__reconciler_journal.sql"),
        include_str!("../migrations/V3__reconciler_role.sql"),
        include_str!("../migrations/V4__revert_and_periods.sql"),
        include_str!("../migrations/V5__safety.sql"),
        include_str!("../migrations/V6__lease.sql"),
        include_str!("../migrations/V7__ledger_mismatches.sql"),
        include_str!("../migrations/V8__incremental.sql"),
        include_str!("../migrations/V9__trigger_plans.sql"),
    ] {
        if let Err(e) = db.client.batch_execute(sql).await {
            panic!("{:?}", e.as_db_error().map(|d| d.message().to_string()));
        }
    }
    let org = db.org("Upgraded", Some(0)).await;
    let user = db.user().await;
    db.call(user, Some(org), "completed", Some(7), 0).await;
    let before: Vec<String> = db
        .column(
            "SELECT format('%s %s', organization_id, calls_ceil) FROM reconciler.changes
              WHERE calls_ceil <> 0",
        )
        .await;
    assert_eq!(before, vec![format!("{org} 7")]);

    let out = db.run(&["migrate"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("applied V10__change_log_partitions"),
        "{}",
        out.stdout
    );
    let kind: String = db
        .scalar("SELECT relkind::text FROM pg_class WHERE oid = 'reconciler.changes'::regclass")
        .await;
    assert_eq!(kind, "p", "the log is partitioned");
    let pending: Vec<String> = db
        .column(
            "SELECT format('%s %s', organization_id, calls_ceil) FROM reconciler.pending_changes
              WHERE calls_ceil <> 0",
        )
        .await;
    assert_eq!(pending, before, "V8's unconsumed rows stay pending");
    // The unchanged triggers write to the partitioned log.
    db.call(user, Some(org), "completed", Some(2), 0).await;
    let logged: i64 = db
        .scalar("SELECT count(*) FROM reconciler.pending_changes WHERE calls_ceil = 2")
        .await;
    assert_eq!(logged, 1);
    assert_hardened(&db).await;
}
