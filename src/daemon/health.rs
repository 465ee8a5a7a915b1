//! Stall detection from the journal (docs/design.md, "Alerts from the journal"): "no successful
//! pass for `alert.stalled_after_seconds`" is computed from `reconciler.runs`, so it holds for
//! any instance (a standby sees a hung or frozen active one), survives restarts and crash
//! loops, and needs no pass to run. A background task re-reads the journal every few seconds,
//! also while a pass runs; `CRITICAL reconciler stalled since …` is logged once per episode,
//! `INFO reconciler recovered` when a pass succeeds again.
//!
//! Only an `ok` pass counts as success: a `partial`, `refused` or `failed` one does not. While
//! none ever succeeded, the clock starts at the first pass in the journal (or at start-up).
//! When the database cannot be read, the last success known is aged by this machine's clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tracing::info;

use crate::db::{Database, QueryContext};
use crate::telemetry::{critical, error_chain};

const HEALTH: &str = include_str!("sql/health.sql");
/// A journal read that takes longer than this counts as unreadable this round.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The stall state, shared by the monitor task, the daemon loop and the metrics.
#[derive(Debug, Clone)]
pub struct Health {
    stalled_after: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// The last successful pass (journal), if any.
    last_success: Option<DateTime<Utc>>,
    /// Where the stall clock starts while nothing succeeded.
    baseline: DateTime<Utc>,
    /// Why it is not healthy, as far as known.
    last_error: Option<String>,
    alerted: bool,
    /// Whether the latest journal read succeeded.
    database_up: bool,
}

/// The state as the metrics show it.
#[derive(Debug, Clone, Copy)]
pub struct HealthView {
    pub last_success: Option<DateTime<Utc>>,
    pub stalled: bool,
    pub database_up: bool,
}

impl Health {
    /// Nothing known yet: the clock starts now.
    pub fn new(stalled_after: Duration) -> Self {
        Self {
            stalled_after,
            state: Arc::new(Mutex::new(State {
                last_success: None,
                baseline: Utc::now(),
                last_error: None,
                alerted: false,
                database_up: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read the journal now and update the state; log the stall or recovery line if due.
    pub async fn refresh(&self, db: &Database) {
        match tokio::time::timeout(READ_TIMEOUT, read_journal(db)).await {
            Ok(Ok(journal)) => {
                self.lock().database_up = true;
                self.apply(journal);
            }
            Ok(Err(e)) => {
                self.lock().database_up = false;
                self.note_error(e);
            }
            Err(_) => {
                self.lock().database_up = false;
                self.note_error(format!(
                    "reading reconciler.runs took longer than {} s",
                    READ_TIMEOUT.as_secs()
                ));
            }
        }
    }

    /// A pass failed (its error is the most useful "why").
    pub fn note_error(&self, error: String) {
        self.lock().last_error = Some(error);
        self.check(Utc::now());
    }

    fn apply(&self, journal: Journal) {
        {
            let mut s = self.lock();
            if journal.last_success.is_some() && journal.last_success > s.last_success {
                if s.alerted {
                    info!(
                        stalled_since = %since(s.last_success, s.baseline),
                        "reconciler recovered: a pass succeeded again"
                    );
                    s.alerted = false;
                }
                s.last_success = journal.last_success;
                s.last_error = None;
            }
            if let Some(first) = journal.first_run {
                s.baseline = s.baseline.min(first);
            }
            if journal.last_problem.is_some() {
                s.last_error = journal.last_problem;
            }
        }
        self.check(journal.now);
    }

    /// Log the stall line if the threshold is crossed and it was not logged yet this episode.
    fn check(&self, now: DateTime<Utc>) {
        let mut s = self.lock();
        let started = s.last_success.unwrap_or(s.baseline);
        let age = (now - started).to_std().unwrap_or_default();
        if s.alerted || age < self.stalled_after {
            return;
        }
        s.alerted = true;
        let since = since(s.last_success, s.baseline);
        critical!(
            stalled_after_seconds = self.stalled_after.as_secs(),
            last_success = %since,
            last_error = s.last_error.as_deref().unwrap_or("none"),
            "reconciler stalled since {since}: no successful pass"
        );
    }

    /// Whether a stall is being reported (for STATUS and the metrics).
    pub fn is_stalled(&self) -> bool {
        self.lock().alerted
    }

    /// The stall threshold (`alert.stalled_after_seconds`).
    pub fn stalled_after(&self) -> Duration {
        self.stalled_after
    }

    /// What the metrics show.
    pub fn view(&self) -> HealthView {
        let s = self.lock();
        HealthView {
            last_success: s.last_success,
            stalled: s.alerted,
            database_up: s.database_up,
        }
    }

    /// The last successful pass in the journal, as far as known.
    pub fn last_success(&self) -> Option<DateTime<Utc>> {
        self.lock().last_success
    }

    /// Re-read the journal every `every` until the task is aborted.
    pub fn spawn_monitor(&self, db: Database, every: Duration) -> JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                health.refresh(&db).await;
            }
        })
    }
}

fn since(last_success: Option<DateTime<Utc>>, baseline: DateTime<Utc>) -> String {
    last_success
        .unwrap_or(baseline)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// What the journal says.
struct Journal {
    last_success: Option<DateTime<Utc>>,
    first_run: Option<DateTime<Utc>>,
    last_problem: Option<String>,
    now: DateTime<Utc>,
}

async fn read_journal(db: &Database) -> Result<Journal, String> {
    let read = async {
        let client = db.client().await?;
        let row = client
            .query_one(HEALTH, &[])
            .await
            .context("read the last successful pass from reconciler.runs")?;
        Ok::<_, crate::db::DbError>(Journal {
            last_success: row.get("last_success_at"),
            first_run: row.get("first_run_at"),
            last_problem: row.get("last_problem"),
            now: row.get("now"),
        })
    };
    read.await.map_err(|e| error_chain(&e))
}
