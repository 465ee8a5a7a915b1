//! Security checks: the connection holds session state (no transaction pooler), the app's
//! `increment_used_minutes` cannot be hijacked, over-granted or fed bad input (probed in
//! transactions that are rolled back), and the journal is out of the API roles' reach.

use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::report::Check;
use crate::config::Settings;
use crate::db::{DbError, QueryContext};
use crate::telemetry::error_chain;

const SESSION: &str = include_str!("sql/session.sql");
const BACKEND_PID: &str = include_str!("sql/backend_pid.sql");
const FUNCTION: &str = include_str!("sql/function.sql");
const PROBE_INCREMENT: &str = include_str!("sql/probe_increment.sql");
const JOURNAL_EXPOSURE: &str = include_str!("sql/journal_exposure.sql");

/// Session state must survive between statements: a transaction pooler would hand the next
/// statement to another backend, and the pass's advisory lock would mean nothing.
pub(super) async fn connection(client: &tokio_postgres::Client, settings: &Settings) -> Check {
    const NAME: &str = "connection";
    let probe = async {
        let first = client
            .query_one(SESSION, &[])
            .await
            .context("identify the session")?;
        let second: i32 = client
            .query_one(BACKEND_PID, &[])
            .await
            .context("identify the session again")?
            .get(0);
        Ok::<_, DbError>((
            first.get::<_, i32>(0),
            second,
            first.get::<_, String>(1),
            first.get::<_, String>(2),
            first.get::<_, String>(3),
        ))
    };
    match probe.await {
        Ok((pid, again, app, user, version)) if pid == again => {
            let detail = format!(
                "PostgreSQL {version} as {user}, one backend across statements (pid {pid}), \
                 application_name={app}, lock key {}",
                settings.lock.key
            );
            if app == crate::db::APPLICATION_NAME {
                Check::ok(NAME, detail)
            } else {
                Check::warn(
                    NAME,
                    detail,
                    "a pooler rewrote application_name: connect directly (db.<ref>.supabase.co:5432) \
                     or through the session pooler",
                )
            }
        }
        Ok((pid, again, ..)) => Check::fail(
            NAME,
            format!("statements ran on different backends (pid {pid}, then {again}): a transaction pooler"),
            "use the direct connection (db.<ref>.supabase.co:5432) or the session pooler; \
             the transaction pooler cannot hold the advisory lock",
        ),
        Err(e) => Check::not_checked(NAME, error_chain(&e)),
    }
}

/// The seed's function is SECURITY DEFINER with no search_path, executable by PUBLIC, and
/// accepts any input: each of those is a FAIL.
pub(super) async fn function(
    client: &mut tokio_postgres::Client,
    migrated: bool,
) -> Result<Check, DbError> {
    const NAME: &str = "increment_used_minutes";
    let fix = if migrated {
        "migrations are applied, so the function was replaced afterwards (the seed SQL re-run?): \
         re-create it with `psql -f migrations/V1__usage_tracking_fix.sql` (re-runnable)"
    } else {
        "synqall-reconciler migrate (V1 replaces it: SET search_path = '', input checks, EXECUTE \
         only for authenticated (own organizations) and service_role)"
    };
    let rows = client
        .query(FUNCTION, &[])
        .await
        .context("inspect increment_used_minutes")?;
    if rows.is_empty() {
        return Ok(Check::fail(
            NAME,
            "public.increment_used_minutes does not exist: the app cannot record usage",
            fix,
        ));
    }
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    let mut probe_note = "";
    for row in &rows {
        let signature: String = row.get("signature");
        let definer: bool = row.get("security_definer");
        let search_path: String = row.get("search_path_setting");
        if definer && search_path.is_empty() {
            problems.push(format!(
                "{signature} is SECURITY DEFINER without a fixed search_path (a caller's objects can hijack it)"
            ));
        }
        if row.get::<_, bool>("public_executes") {
            problems.push(format!("PUBLIC may execute {signature}"));
        }
        if row.get::<_, Option<bool>>("anon_executes") == Some(true) {
            problems.push(format!("anon may execute {signature}"));
        }
        facts.push(format!(
            "{signature}: {}, {}",
            if definer {
                "SECURITY DEFINER"
            } else {
                "SECURITY INVOKER"
            },
            if search_path.is_empty() {
                "no search_path".to_string()
            } else {
                search_path
            }
        ));
        if signature.ends_with("(uuid,integer)") {
            if row.get::<_, bool>("we_execute") {
                problems.extend(probe_input_checks(client).await?);
                probe_note = "rejects NULL/non-positive minutes and unknown organizations \
                              (probed, rolled back)";
            } else {
                probe_note = "input checks not probed: this login may not execute it";
            }
        }
    }
    Ok(if problems.is_empty() {
        Check::ok(
            NAME,
            format!(
                "{}; PUBLIC and anon may not execute it; {probe_note}",
                facts.join("; ")
            ),
        )
    } else {
        Check::fail(NAME, problems.join("; "), fix)
    })
}

/// Call the function with bad input inside a transaction that is rolled back: each call must
/// fail with the expected error, not succeed silently.
async fn probe_input_checks(client: &mut tokio_postgres::Client) -> Result<Vec<String>, DbError> {
    let unknown_org = Uuid::new_v4();
    let probes: [(&str, Option<Uuid>, Option<i32>, SqlState); 4] = [
        (
            "accepts minutes_to_add = -5",
            Some(unknown_org),
            Some(-5),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "accepts minutes_to_add = NULL",
            Some(unknown_org),
            None,
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "accepts org_id = NULL",
            None,
            Some(1),
            SqlState::NULL_VALUE_NOT_ALLOWED,
        ),
        (
            "accepts an unknown org_id without error",
            Some(unknown_org),
            Some(1),
            SqlState::NO_DATA_FOUND,
        ),
    ];
    let mut problems = Vec::new();
    for (problem, org, minutes, expected) in probes {
        let tx = client
            .transaction()
            .await
            .context("begin a probe transaction")?;
        let result = tx.query(PROBE_INCREMENT, &[&org, &minutes]).await;
        tx.rollback().await.context("roll the probe back")?;
        match result {
            Ok(_) => problems.push(problem.to_string()),
            Err(e) if e.code() == Some(&expected) => {}
            // Not a member (an authenticated-like login): rejected, which is what matters.
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
            Err(e) => problems.push(format!("{problem}: unexpected error {}", error_chain(&e))),
        }
    }
    Ok(problems)
}

pub(super) async fn journal_privileges(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "journal privileges";
    let mut problems = Vec::new();
    let mut role_found = false;
    for row in client
        .query(JOURNAL_EXPOSURE, &[])
        .await
        .context("read privileges on the reconciler schema")?
    {
        let role: String = row.get("role");
        if role == "synqall_reconciler" {
            role_found = true;
            for (flag, what) in [
                ("rolsuper", "is a superuser"),
                ("rolbypassrls", "bypasses RLS"),
                (
                    "rolcanlogin",
                    "can log in (log in through a member login instead)",
                ),
            ] {
                if row.get::<_, bool>(flag) {
                    problems.push(format!("synqall_reconciler {what}"));
                }
            }
        } else if row.get::<_, bool>("schema_usage") || row.get::<_, bool>("table_access") {
            problems.push(format!("{role} can reach the reconciler schema"));
        }
    }
    if !role_found {
        problems.push("role synqall_reconciler is missing".into());
    }
    Ok(if problems.is_empty() {
        Check::ok(
            NAME,
            "anon/authenticated cannot reach reconciler.*; synqall_reconciler is NOLOGIN, no superuser, no BYPASSRLS",
        )
    } else {
        Check::fail(
            NAME,
            problems.join("; "),
            "re-apply migrations/V2 and V3 with psql -f (re-runnable), and revoke what was granted by hand",
        )
    })
}
