//! How a sweep reads the two ledgers: through the covering indexes `doctor` names, or the
//! tables.
//!
//! With `calls (organization_id) INCLUDE (status, duration_minutes, created_at)` and its
//! usage_metrics twin, each ledger's per-organization aggregate can be an index-only scan that
//! arrives sorted by organization: grouped as it streams, no hash table, narrower rows than
//! the table's. Measured at 100k organizations / 10M calls that is about 0.75× the time of the
//! bare sums over the tables. PostgreSQL's planner does not pick it on its own (it prices the
//! index's pages as random reads), so the sweep's read-only transaction says so with
//! `SET LOCAL enable_seqscan = off, enable_hashagg = off`, and only when both indexes exist
//! and are valid, and both tables are mostly all-visible: an index-only scan reads the table
//! for every row on a page VACUUM has not marked, and past a few percent of such pages the
//! table is the faster read. Anything else reads the tables as the planner chooses.

use tokio_postgres::GenericClient;

use crate::db::{DbError, QueryContext};

const LEDGER_INDEXES: &str = include_str!("sql/ledger_indexes.sql");

/// Below this share of all-visible pages (as the last VACUUM found them) a table is read
/// whole: an index-only scan would visit the table for too many rows.
pub const ALL_VISIBLE_MIN: f64 = 0.9;

/// One ledger table's covering index, as the catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerIndex {
    /// `public.calls` or `public.usage_metrics`.
    pub relation: String,
    /// A valid, non-partial index leads with organization_id and carries what the reads need.
    pub covered: bool,
    /// The planner's row estimate.
    pub rows_estimate: i64,
    /// Share of the table's pages VACUUM last marked all-visible (0 when never vacuumed).
    pub all_visible: f64,
}

/// The two ledgers' covering indexes.
///
/// # Errors
/// The catalog query failed.
pub async fn inspect(client: &impl GenericClient) -> Result<Vec<LedgerIndex>, DbError> {
    let rows = client
        .query(LEDGER_INDEXES, &[])
        .await
        .context("look for the ledgers' covering indexes")?;
    Ok(rows
        .iter()
        .map(|r| LedgerIndex {
            relation: r.get("relation"),
            covered: r.get("covered"),
            rows_estimate: r.get("rows_estimate"),
            all_visible: r.get("all_visible"),
        })
        .collect())
}

/// How the sweep's aggregate reads the ledgers.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepRead {
    /// Index-only scans of both covering indexes.
    Indexes,
    /// The tables, as the planner chooses; why not the indexes.
    Tables(String),
}

impl SweepRead {
    /// The indexes when both are there and both tables are mostly all-visible.
    pub fn choose(indexes: &[LedgerIndex]) -> Self {
        let mut reasons = Vec::new();
        for index in indexes {
            if !index.covered {
                reasons.push(format!("{} has no covering index", index.relation));
            } else if index.all_visible < ALL_VISIBLE_MIN {
                reasons.push(format!(
                    "{} is {:.0}% all-visible (VACUUM it to read the index)",
                    index.relation,
                    index.all_visible * 100.0
                ));
            }
        }
        if indexes.is_empty() {
            reasons.push("no ledger table found".into());
        }
        if reasons.is_empty() {
            Self::Indexes
        } else {
            Self::Tables(reasons.join("; "))
        }
    }

    /// The statements that open the sweep's read-only transaction (REPEATABLE READ: the
    /// snapshot the pass records as consumed is the one the comparison read). Through the indexes the
    /// aggregates are sorted (no memory to speak of); over the tables they are hash tables
    /// of every organization, given `work_mem_mb` (database.sweep_work_mem_mb) so they do not
    /// spill to disk at a server's small default.
    pub fn begin(&self, work_mem_mb: u64) -> String {
        match self {
            Self::Indexes => {
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL enable_seqscan = off; \
                 SET LOCAL enable_hashagg = off"
                    .to_string()
            }
            Self::Tables(_) => format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                 SET LOCAL work_mem = '{work_mem_mb}MB'"
            ),
        }
    }

    /// For the log and the report: `indexes` or `tables`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Indexes => "indexes",
            Self::Tables(_) => "tables",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(relation: &str, covered: bool, all_visible: f64) -> LedgerIndex {
        LedgerIndex {
            relation: relation.into(),
            covered,
            rows_estimate: 1_000,
            all_visible,
        }
    }

    #[test]
    fn indexes_only_when_both_cover_and_both_tables_are_mostly_visible() {
        let both = [
            index("public.calls", true, 1.0),
            index("public.usage_metrics", true, 0.95),
        ];
        assert_eq!(SweepRead::choose(&both), SweepRead::Indexes);
        let missing = [
            index("public.calls", true, 1.0),
            index("public.usage_metrics", false, 1.0),
        ];
        assert_eq!(
            SweepRead::choose(&missing),
            SweepRead::Tables("public.usage_metrics has no covering index".into())
        );
        let stale = [
            index("public.calls", true, 0.5),
            index("public.usage_metrics", true, 1.0),
        ];
        assert_eq!(
            SweepRead::choose(&stale),
            SweepRead::Tables(
                "public.calls is 50% all-visible (VACUUM it to read the index)".into()
            )
        );
        assert!(matches!(SweepRead::choose(&[]), SweepRead::Tables(_)));
    }

    #[test]
    fn the_tables_read_gets_its_work_mem_and_the_index_read_sorts() {
        let tables = SweepRead::Tables("why".into()).begin(64);
        assert!(tables.ends_with("SET LOCAL work_mem = '64MB'"), "{tables}");
        assert!(tables.contains("REPEATABLE READ READ ONLY"), "{tables}");
        let indexes = SweepRead::Indexes.begin(64);
        assert!(indexes.contains("enable_hashagg = off"), "{indexes}");
        assert!(!indexes.contains("work_mem"), "{indexes}");
    }
}
