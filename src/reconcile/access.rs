//! How a sweep reads the two ledgers: each through the covering index `doctor` names, or its
//! table.
//!
//! With `calls (organization_id) INCLUDE (status, duration_minutes, created_at)` and its
//! usage_metrics twin, each ledger's per-organization aggregate can be an index-only scan that
//! arrives sorted by organization: grouped as it streams, no hash table, narrower rows than
//! the table's. Measured at 100k organizations / 10M calls that is about 0.75× the time of the
//! bare sums over the tables. PostgreSQL's planner does not pick it on its own (it prices the
//! index's pages as random reads), so the sweep's read-only transaction steers it with
//! `SET LOCAL` ([`SweepRead::begin`]), for each ledger whose index exists and is valid and
//! whose table is mostly all-visible: an index-only scan reads the table for every row on a
//! page VACUUM has not marked, and past a few percent of such pages the table is the faster
//! read. The other ledger reads its table, as the planner chooses.

use tokio_postgres::GenericClient;

use crate::db::{DbError, QueryContext};
use crate::reconcile::queries::{MetricSum, TotalsShape};

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

/// How the sweep reads one ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerRead {
    /// An index-only scan of its covering index, sorted by organization.
    Index,
    /// The table, as the planner chooses; why not the index.
    Table(String),
}

impl LedgerRead {
    /// The covering index when it is there and VACUUM left the table mostly all-visible.
    fn choose(index: Option<&LedgerIndex>, relation: &str) -> Self {
        match index {
            None => Self::Table(format!("{relation} not found")),
            Some(index) if !index.covered => {
                Self::Table(format!("{relation} has no covering index"))
            }
            Some(index) if index.all_visible < ALL_VISIBLE_MIN => Self::Table(format!(
                "{relation} is {:.0}% all-visible (VACUUM it to read the index)",
                index.all_visible * 100.0
            )),
            Some(_) => Self::Index,
        }
    }

    /// Read through the covering index.
    pub fn by_index(&self) -> bool {
        matches!(self, Self::Index)
    }
}

/// How the sweep's aggregate reads the two ledgers, each on its own: a ledger whose rows were
/// just rewritten (orphans attributed, usage rows corrected) is read whole while the other
/// still reads its index.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRead {
    pub calls: LedgerRead,
    pub usage: LedgerRead,
    /// usage_metrics has its covering index, read or not ([`Self::metric_sum`]).
    pub usage_indexed: bool,
}

/// Which ledgers read their covering index, derived from a [`SweepRead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    Indexes,
    Tables,
    /// Only this ledger (`public.calls` or `public.usage_metrics`) reads its index.
    OneIndex {
        relation: &'static str,
    },
}

/// The two ledgers' relations, as `sql/ledger_indexes.sql` names them.
const CALLS: &str = "public.calls";
const USAGE: &str = "public.usage_metrics";

impl SweepRead {
    /// Each ledger through its index when it is there and its table mostly all-visible.
    pub fn choose(indexes: &[LedgerIndex]) -> Self {
        let find = |relation: &str| indexes.iter().find(|i| i.relation == relation);
        Self {
            calls: LedgerRead::choose(find(CALLS), CALLS),
            usage: LedgerRead::choose(find(USAGE), USAGE),
            usage_indexed: find(USAGE).is_some_and(|index| index.covered),
        }
    }

    /// How the comparison sums usage values: raw where the covering index of usage_metrics
    /// can serve the exact re-sum of an organization whose raw sum is NaN, infinite or beyond
    /// bigint; without it each such organization would read the whole table again.
    pub fn metric_sum(&self) -> MetricSum {
        if self.usage_indexed {
            MetricSum::Raw
        } else {
            MetricSum::Exact
        }
    }

    /// Why the tables read (of one ledger or both): empty when both read their indexes.
    pub fn why_tables(&self) -> String {
        [&self.calls, &self.usage]
            .into_iter()
            .filter_map(|read| match read {
                LedgerRead::Index => None,
                LedgerRead::Table(why) => Some(why.as_str()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Which ledgers read their index.
    pub fn mode(&self) -> ReadMode {
        match (self.calls.by_index(), self.usage.by_index()) {
            (true, true) => ReadMode::Indexes,
            (false, false) => ReadMode::Tables,
            (true, false) => ReadMode::OneIndex { relation: CALLS },
            (false, true) => ReadMode::OneIndex { relation: USAGE },
        }
    }

    /// The statements that open the sweep's read-only transaction (REPEATABLE READ: the
    /// snapshot the pass records as consumed is the one the comparison read); with one index,
    /// the comparison asks that ledger's totals sorted ([`Self::shapes`]).
    ///
    /// - Both indexes: no sequential scan, no hash aggregate; each aggregate is an index-only
    ///   scan grouped as it streams (no memory to speak of).
    /// - One index: sorts are off and that ledger's totals are asked `ORDER BY
    ///   organization_id`, which only its index-only scan delivers without a sort, while the
    ///   other ledger reads its table as the planner chooses (a statement-wide
    ///   `enable_seqscan` would send that one through its index too). Measured on 100k
    ///   organizations / 10M calls with the usage rows just rewritten and calls fully marked:
    ///   0.87–1.00× the floor, where both tables read 1.20–1.23×.
    /// - Both tables: as the planner chooses.
    ///
    /// A hash aggregate is a table of every organization: given `work_mem_mb`
    /// (database.sweep_work_mem_mb) it does not spill to disk at a server's small default.
    /// JIT inlining and optimization are off (JIT itself stays as the server has it): the
    /// statement's estimated cost passes their thresholds, and they compiled for 1.2 s of CPU
    /// per sweep on two cores, more than they saved (the tables read at 100k organizations /
    /// 10M calls, same run: 4.3–4.4 s with them, 4.0–4.1 s with JIT off, 3.9–4.1 s without).
    pub fn begin(&self, work_mem_mb: u64) -> String {
        let open = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                    SET LOCAL jit_inline_above_cost = -1; SET LOCAL jit_optimize_above_cost = -1";
        match self.mode() {
            ReadMode::Indexes => {
                format!("{open}; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashagg = off")
            }
            ReadMode::Tables => format!("{open}; SET LOCAL work_mem = '{work_mem_mb}MB'"),
            ReadMode::OneIndex { .. } => format!(
                "{open}; SET LOCAL work_mem = '{work_mem_mb}MB'; SET LOCAL enable_sort = off"
            ),
        }
    }

    /// How the comparison asks for the (calls, usage_metrics) totals: the one ledger read
    /// through its index while the other reads its table asked sorted; otherwise as planned
    /// (the settings steer a read of both indexes). A ledger read from its table is left to
    /// the planner. Pinning it to a sequential scan (a condition on ctid) bought nothing: at
    /// 1M organizations, where hash aggregates of every organization outgrow work_mem, the
    /// planner then chose a whole plain index scan of calls (organization_id), 24.6 s, and
    /// left to itself took 25.1 s.
    pub fn shapes(&self) -> (TotalsShape, TotalsShape) {
        match self.mode() {
            ReadMode::OneIndex { relation: CALLS } => (TotalsShape::Sorted, TotalsShape::AsPlanned),
            ReadMode::OneIndex { .. } => (TotalsShape::AsPlanned, TotalsShape::Sorted),
            ReadMode::Indexes | ReadMode::Tables => {
                (TotalsShape::AsPlanned, TotalsShape::AsPlanned)
            }
        }
    }

    /// For the log and the report: `indexes`, `tables`, or the one ledger read through its
    /// index (`calls_index`, `usage_metrics_index`).
    pub fn as_str(&self) -> &'static str {
        match self.mode() {
            ReadMode::Indexes => "indexes",
            ReadMode::Tables => "tables",
            ReadMode::OneIndex { relation: CALLS } => "calls_index",
            ReadMode::OneIndex { .. } => "usage_metrics_index",
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
    fn each_ledger_reads_its_index_when_it_covers_and_its_table_is_mostly_visible() {
        let both = [index(CALLS, true, 1.0), index(USAGE, true, 0.95)];
        let read = SweepRead::choose(&both);
        assert_eq!(
            (read.as_str(), read.why_tables()),
            ("indexes", String::new())
        );
        assert_eq!(read.metric_sum(), MetricSum::Raw);
        let missing = [index(CALLS, true, 1.0), index(USAGE, false, 1.0)];
        let read = SweepRead::choose(&missing);
        assert_eq!(read.calls, LedgerRead::Index);
        // No index to sum an organization's usage rows again by: each value tested instead.
        assert_eq!(read.metric_sum(), MetricSum::Exact);
        assert_eq!(
            (read.as_str(), read.why_tables().as_str()),
            ("calls_index", "public.usage_metrics has no covering index")
        );
        let stale = [index(CALLS, true, 0.5), index(USAGE, true, 1.0)];
        let read = SweepRead::choose(&stale);
        assert_eq!(read.metric_sum(), MetricSum::Raw);
        assert_eq!(
            (read.as_str(), read.why_tables().as_str()),
            (
                "usage_metrics_index",
                "public.calls is 50% all-visible (VACUUM it to read the index)"
            )
        );
        let neither = SweepRead::choose(&[index(CALLS, false, 1.0)]);
        assert_eq!(
            (neither.as_str(), neither.why_tables().as_str()),
            (
                "tables",
                "public.calls has no covering index; public.usage_metrics not found"
            )
        );
    }

    #[test]
    fn each_read_sets_what_its_plan_needs() {
        let (calls_index, table) = (LedgerRead::Index, LedgerRead::Table("why".into()));
        let read = |calls: &LedgerRead, usage: &LedgerRead| SweepRead {
            calls: calls.clone(),
            usage: usage.clone(),
            usage_indexed: usage.by_index(),
        };
        for begin in [
            read(&table, &table).begin(64),
            read(&calls_index, &calls_index).begin(64),
            read(&calls_index, &table).begin(64),
        ] {
            assert!(begin.starts_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
            assert!(begin.contains("jit_optimize_above_cost = -1"), "{begin}");
        }
        let tables = read(&table, &table);
        assert!(tables.begin(64).ends_with("SET LOCAL work_mem = '64MB'"));
        let planned = (TotalsShape::AsPlanned, TotalsShape::AsPlanned);
        assert_eq!(tables.shapes(), planned);
        let indexes = read(&calls_index, &calls_index);
        assert!(indexes.begin(64).contains("enable_hashagg = off"));
        assert!(!indexes.begin(64).contains("work_mem"));
        assert_eq!(indexes.shapes(), planned);
        let mixed = read(&table, &calls_index);
        assert!(mixed
            .begin(64)
            .contains("work_mem = '64MB'; SET LOCAL enable_sort = off"));
        assert_eq!(
            mixed.shapes(),
            (TotalsShape::AsPlanned, TotalsShape::Sorted)
        );
        assert_eq!(
            read(&calls_index, &table).shapes(),
            (TotalsShape::Sorted, TotalsShape::AsPlanned)
        );
    }
}
