//! See before you write (docs/design.md, "See before you write"): before a pass writes
//! anything, it proves that its login sees every row it reasons about and can write what it
//! writes. A pass that trusted whatever rows row-level security left visible would set every
//! counter of a hidden ledger to 0, or see no organization at all and call that clean.
//!
//! For each table (organizations, calls, user_organizations, usage_metrics when it is the
//! truth, and auth.users as the orphaned-users view's owner reads it), from the catalogs: the
//! SELECT privilege; row-level security that applies to the reader with no permissive SELECT
//! policy for it (every row hidden); for the tables a pass updates, the UPDATE privilege and an
//! UPDATE policy (without one an UPDATE silently changes nothing). Where only non-trivial
//! policies apply, the visible row count is compared with the planner's estimate: far below it
//! means a policy hides rows. `doctor` runs the same check and reports FAIL.

use tokio_postgres::GenericClient;

use crate::config::Source;
use crate::db::{DbError, QueryContext};

const VISIBILITY: &str = include_str!("sql/visibility.sql");
const AUTH_VIEW_OWNER: &str = include_str!("sql/auth_view_owner.sql");

/// A table whose estimate is below this is not judged by its count: estimates of small tables
/// are too rough.
const MIN_ESTIMATE: i64 = 100;

/// Something a role cannot see or do that a pass relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blind {
    pub table: String,
    pub role: String,
    pub what: String,
    pub fix: String,
}

impl std::fmt::Display for Blind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} as role {}: {}; fix: {}",
            self.table, self.role, self.what, self.fix
        )
    }
}

/// One relation to check, as whom (`None`: the current role), and the column a pass updates.
struct Need {
    relation: &'static str,
    reader: Option<String>,
    write_column: Option<&'static str>,
}

/// What the current role (and, for auth.users, the owner of the view it is read through)
/// cannot see or do. Empty: the pass may write.
///
/// # Errors
/// The catalog queries failed.
pub async fn check(client: &impl GenericClient, source: Source) -> Result<Vec<Blind>, DbError> {
    check_as(client, source, None).await
}

/// [`check`] for the role `reader` (`None`: the current role, whose visible rows are also
/// counted against the estimate where policies are not trivially whole).
///
/// # Errors
/// The catalog queries failed.
pub async fn check_as(
    client: &impl GenericClient,
    source: Source,
    reader: Option<&str>,
) -> Result<Vec<Blind>, DbError> {
    let need = |relation, write_column| Need {
        relation,
        reader: reader.map(str::to_string),
        write_column,
    };
    let mut needs = vec![
        need("public.organizations", Some("used_minutes")),
        need("public.calls", Some("organization_id")),
        need("public.user_organizations", None),
    ];
    if source == Source::UsageMetrics {
        needs.push(need("public.usage_metrics", None));
    }
    let view_owner = client
        .query_opt(AUTH_VIEW_OWNER, &[])
        .await
        .context("find the owner of reconciler.auth_user_ids")?
        .map(|r| r.get::<_, String>("owner"));
    if let Some(owner) = view_owner {
        needs.push(Need {
            relation: "auth.users",
            reader: Some(owner),
            write_column: None,
        });
    }
    let relations: Vec<&str> = needs.iter().map(|n| n.relation).collect();
    let readers: Vec<Option<&str>> = needs.iter().map(|n| n.reader.as_deref()).collect();
    let columns: Vec<Option<&str>> = needs.iter().map(|n| n.write_column).collect();
    let rows = client
        .query(VISIBILITY, &[&relations, &readers, &columns])
        .await
        .context("check what the login can see")?;
    let mut blind = Vec::new();
    for row in rows {
        let relation: String = row.get("relation");
        let role: String = row.get("reader");
        if !row.get::<_, bool>("present") {
            continue; // the schema check names missing tables
        }
        let found = judge(&row, &relation, &role);
        let trivially_whole = !row.get::<_, bool>("rls_hides")
            || (row.get::<_, bool>("any_true") && row.get::<_, i64>("restrictive") == 0);
        if found.is_empty() && row.get::<_, bool>("is_me") && !trivially_whole {
            blind.extend(count_check(client, &relation, &role, row.get("estimate")).await?);
        }
        blind.extend(found);
    }
    Ok(blind)
}

/// The catalog facts of one relation, judged.
fn judge(row: &tokio_postgres::Row, relation: &str, role: &str) -> Vec<Blind> {
    let blind = |what: String, fix: String| Blind {
        table: relation.to_string(),
        role: role.to_string(),
        what,
        fix,
    };
    let mut found = Vec::new();
    let write_column: Option<String> = row.get("write_column");
    if !row.get::<_, bool>("can_select") {
        found.push(blind(
            "may not SELECT it".into(),
            format!("GRANT SELECT ON {relation} TO synqall_reconciler (or re-run synqall-reconciler migrate as the owner)"),
        ));
    }
    let rls = row.get::<_, bool>("rls_hides");
    if rls && row.get::<_, i64>("select_policies") == 0 {
        found.push(blind(
            "row-level security is on and no policy lets this role SELECT: every row is hidden \
             from it"
                .into(),
            format!(
                "CREATE POLICY synqall_reconciler_read ON {relation} FOR SELECT TO \
                 synqall_reconciler USING (true); (migrations/V3__reconciler_role.sql creates it \
                 and can be re-run with psql -f)"
            ),
        ));
    }
    if let Some(column) = write_column {
        if !row.get::<_, bool>("can_update") {
            found.push(blind(
                format!("may not UPDATE {column}"),
                format!("GRANT UPDATE ({column}) ON {relation} TO synqall_reconciler"),
            ));
        } else if rls && row.get::<_, i64>("update_policies") == 0 {
            found.push(blind(
                "row-level security is on and no policy lets this role UPDATE: every repair \
                 would silently change nothing"
                    .into(),
                format!(
                    "CREATE POLICY synqall_reconciler_write ON {relation} FOR UPDATE TO \
                     synqall_reconciler USING (true) WITH CHECK (true); (as in \
                     migrations/V3__reconciler_role.sql)"
                ),
            ));
        }
    }
    found
}

/// With only non-trivial policies applying, count what the role sees: far below the estimate
/// means a policy hides rows.
async fn count_check(
    client: &impl GenericClient,
    relation: &str,
    role: &str,
    estimate: i64,
) -> Result<Option<Blind>, DbError> {
    if estimate < MIN_ESTIMATE {
        return Ok(None);
    }
    // `relation` is one of the fixed names above, never input.
    let visible: i64 = client
        .query_one(&format!("SELECT count(*) FROM {relation}"), &[])
        .await
        .context("count the rows the login sees")?
        .get(0);
    if visible * 2 >= estimate {
        return Ok(None);
    }
    Ok(Some(Blind {
        table: relation.to_string(),
        role: role.to_string(),
        what: format!(
            "sees {visible} of about {estimate} rows: a row-level security policy hides the rest"
        ),
        fix: format!(
            "give synqall_reconciler a policy that shows every row (CREATE POLICY \
             synqall_reconciler_read ON {relation} FOR SELECT TO synqall_reconciler USING \
             (true)); if rows were just deleted, ANALYZE {relation}"
        ),
    }))
}
