//! Security checks: the connection holds session state (no transaction pooler), the app's
//! `increment_used_minutes` cannot be hijacked, over-granted or fed bad input (probed in
//! transactions that are rolled back), and the journal is out of the API roles' reach.

use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::report::Check;
use crate::config::Settings;
use crate::db::{pinning, Database, DbError, QueryContext};
use crate::reconcile::visibility;
use crate::telemetry::error_chain;

const SESSION: &str = include_str!("sql/session.sql");
const FUNCTION: &str = include_str!("sql/function.sql");
const PROBE_INCREMENT: &str = include_str!("sql/probe_increment.sql");
const JOURNAL_EXPOSURE: &str = include_str!("sql/journal_exposure.sql");
const LEDGER_WRITERS: &str = include_str!("sql/ledger_writers.sql");
const CHECK_RECONCILER_ROLE: &str = include_str!("sql/check_reconciler_role.sql");

/// Session state must survive between statements: a transaction pooler would hand the next
/// statement to another backend, and the pass's advisory lock would mean nothing.
pub(super) async fn connection(
    db: &Database,
    client: &tokio_postgres::Client,
    settings: &Settings,
) -> Check {
    const NAME: &str = "connection";
    // First, with simple queries: through a transaction pooler prepared statements go astray.
    match pinning::check_pinned(db, client).await {
        Ok(()) => {}
        Err(e @ DbError::TransactionPooler { .. }) => {
            return Check::fail(
                NAME,
                error_chain(&e),
                "use the direct connection (db.<ref>.supabase.co:5432) or a session-mode \
                 pooler (Supabase's session pooler; pgbouncer pool_mode = session)",
            )
        }
        Err(e) => return Check::not_checked(NAME, error_chain(&e)),
    }
    let facts = match client.query_one(SESSION, &[]).await {
        Ok(row) => row,
        Err(e) => return Check::not_checked(NAME, error_chain(&e)),
    };
    let (pid, app, user, version): (i32, String, String, String) =
        (facts.get(0), facts.get(1), facts.get(2), facts.get(3));
    let detail = format!(
        "PostgreSQL {version} as {user}, one server session per connection (pid {pid}, proven \
         with a second connection held in a transaction), application_name={app}, lock key {}",
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
                ("rolcanlogin", "can log in"),
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
        let mut fixes = Vec::new();
        if problems.iter().any(|p| p.contains("can log in")) {
            fixes.push(
                "ALTER ROLE synqall_reconciler NOLOGIN; (log in through a member login: \
                 CREATE ROLE synqall_reconciler_login LOGIN PASSWORD '...' IN ROLE synqall_reconciler;)"
                    .to_string(),
            );
        }
        if problems
            .iter()
            .any(|p| p.contains("superuser") || p.contains("bypasses RLS"))
        {
            fixes.push("ALTER ROLE synqall_reconciler NOSUPERUSER NOBYPASSRLS;".to_string());
        }
        if problems
            .iter()
            .any(|p| p.contains("can reach") || p.contains("missing"))
        {
            fixes.push(
                "re-apply migrations/V2 and V3 with psql -f (re-runnable), and revoke what was \
                 granted by hand"
                    .to_string(),
            );
        }
        Check::fail(NAME, problems.join("; "), fixes.join(" "))
    })
}

/// The ledgers are the bill: `anon` writing calls or usage rows is a FAIL; `authenticated`
/// writing them is a WARN unless every policy that lets it pins `organization_id` to the
/// user's memberships (otherwise a user bills another organization by inserting a call).
pub(super) async fn ledger_writers(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "ledger writers";
    let mut anon = Vec::new();
    let mut authenticated = Vec::new();
    for row in client
        .query(LEDGER_WRITERS, &[])
        .await
        .context("read who may write the ledgers")?
    {
        let allowed = row.get::<_, bool>("granted")
            && (row.get::<_, bool>("rls_open")
                || !row.get::<_, Vec<String>>("policies").is_empty());
        if !allowed {
            continue;
        }
        let role: String = row.get("role");
        let what = format!(
            "{} {} ({})",
            row.get::<_, String>("command"),
            row.get::<_, String>("relation"),
            if row.get::<_, bool>("rls_open") {
                "no row-level security in the way".to_string()
            } else {
                format!(
                    "policies {}",
                    row.get::<_, Vec<String>>("policies").join(", ")
                )
            }
        );
        if role == "anon" {
            anon.push(what);
        } else if !row.get::<_, bool>("all_pinned") || row.get::<_, bool>("rls_open") {
            authenticated.push(what);
        }
    }
    Ok(if !anon.is_empty() {
        Check::fail(
            NAME,
            format!(
                "anon may write the ledgers the bill is computed from: {}",
                anon.join("; ")
            ),
            "REVOKE INSERT, UPDATE, DELETE ON public.calls, public.usage_metrics FROM anon; and \
             drop the policies that let anon write them",
        )
    } else if !authenticated.is_empty() {
        Check::warn(
            NAME,
            format!(
                "authenticated may write ledger rows through policies that do not pin \
                 organization_id to the user's memberships: {}",
                authenticated.join("; ")
            ),
            "make each such policy's WITH CHECK require organization_id IN (SELECT \
             organization_id FROM public.user_organizations WHERE user_id = auth.uid()); a user \
             who can write another organization's calls changes that organization's bill",
        )
    } else {
        Check::ok(
            NAME,
            "anon cannot write calls or usage_metrics; authenticated only through policies that \
             pin organization_id to its memberships (or not at all)",
        )
    })
}

/// See before you write, as the pass checks it: what this login (and the daemon's role
/// `synqall_reconciler`, when doctor runs as someone else) cannot see or write. A FAIL: a pass
/// in that state refuses to write.
pub(super) async fn visibility(
    client: &impl GenericClient,
    settings: &Settings,
) -> Result<Check, DbError> {
    const NAME: &str = "rows visible to the pass";
    let source = settings.usage.source;
    let mut blind = visibility::check(client, source).await?;
    let also_role: bool = client
        .query_one(CHECK_RECONCILER_ROLE, &[])
        .await
        .context("look for the synqall_reconciler role")?
        .get("check_role");
    if also_role {
        blind.extend(visibility::check_as(client, source, Some("synqall_reconciler")).await?);
    }
    if blind.is_empty() {
        return Ok(Check::ok(
            NAME,
            format!(
                "every row of organizations, calls, user_organizations{} is visible, and the \
                 written columns writable{}",
                if source == crate::config::Source::UsageMetrics {
                    ", usage_metrics"
                } else {
                    ""
                },
                if also_role {
                    ", for this login and for synqall_reconciler"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(Check::fail(
        NAME,
        blind
            .iter()
            .map(|b| format!("{} as {}: {}", b.table, b.role, b.what))
            .collect::<Vec<_>>()
            .join("; "),
        blind
            .iter()
            .map(|b| b.fix.clone())
            .collect::<Vec<_>>()
            .join(" "),
    ))
}
