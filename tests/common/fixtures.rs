//! A database of its own for each test ([`TestDb`], on the shared cluster, loaded with the
//! same Supabase stand-in `demo` uses) and helpers to plant data in it and read it back.

use std::sync::atomic::{AtomicUsize, Ordering};

use synqall_reconciler::config::Settings;
use synqall_reconciler::fixture::{execute_sql, SEED_FIX_SQL, SUPABASE_STANDIN_SQL};
use tokio_postgres::Client;
use uuid::Uuid;

use super::cluster::{cluster, connect};
use super::runner::{run_bin, Run};

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The advisory lock key a default configuration uses (read from the shipped defaults, not
/// repeated here).
pub fn default_lock_key() -> i64 {
    Settings::load_from(None, std::iter::empty::<(String, String)>())
        .expect("the shipped defaults load")
        .lock
        .key
}

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl TestDb {
    /// The Supabase stand-in as it was before the incident fix: no used_minutes, no migrations.
    pub async fn bare() -> Self {
        let cluster = cluster();
        let name = format!("test_{}", NEXT_DB.fetch_add(1, Ordering::SeqCst));
        execute_sql(&cluster.url("postgres"), &format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = cluster.url(&name);
        execute_sql(&url, SUPABASE_STANDIN_SQL)
            .await
            .expect("load the Supabase stand-in");
        let client = connect(&url).await;
        Self { name, url, client }
    }

    /// The production state today: the stand-in with the seed's SQL run by hand.
    pub async fn seeded() -> Self {
        let db = Self::bare().await;
        db.exec(SEED_FIX_SQL).await;
        db
    }

    /// Migrated with the real `migrate` command.
    pub async fn migrated() -> Self {
        let db = Self::bare().await;
        let out = db.run(&["migrate"], &[]).await;
        assert_eq!(out.code(), 0, "migrate failed: {}", out.stderr);
        db
    }

    /// A login that is a member of the least-privilege role `synqall_reconciler` (migration
    /// V3); returns a URL connecting as it.
    pub async fn reconciler_login(&self) -> String {
        let login = format!("{}_login", self.name);
        let password = uuid::Uuid::new_v4().simple().to_string();
        self.exec(&format!(
            "CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE synqall_reconciler"
        ))
        .await;
        cluster().url_as(&login, &password, &self.name)
    }

    pub async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"))
            .get(0)
    }

    /// The first column of every row `sql` returns.
    pub async fn column<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        self.client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// An organization with the given counter (None = NULL; requires used_minutes to exist).
    pub async fn org(&self, name: &str, used_minutes: Option<i32>) -> Uuid {
        self.client
            .query_one(
                "INSERT INTO public.organizations (name, used_minutes) VALUES ($1, $2::integer) RETURNING id",
                &[&name, &used_minutes],
            )
            .await
            .expect("insert organization")
            .get(0)
    }

    pub async fn user(&self) -> Uuid {
        self.scalar("INSERT INTO auth.users (email) VALUES ('u@example.com') RETURNING id")
            .await
    }

    /// Membership that started `days_ago` days ago.
    pub async fn member(&self, user: Uuid, org: Uuid, days_ago: i32) {
        self.client
            .execute(
                "INSERT INTO public.user_organizations (user_id, organization_id, created_at)
                 VALUES ($1, $2, now() - make_interval(days => $3))",
                &[&user, &org, &days_ago],
            )
            .await
            .expect("insert membership");
    }

    /// A call made `days_ago` days ago.
    pub async fn call(
        &self,
        user: Uuid,
        org: Option<Uuid>,
        status: &str,
        minutes: Option<i32>,
        days_ago: i32,
    ) -> Uuid {
        self.client
            .query_one(
                "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at)
                 VALUES ($1, $2, $3, $4::integer, now() - make_interval(days => $5)) RETURNING id",
                &[&user, &org, &status, &minutes, &days_ago],
            )
            .await
            .expect("insert call")
            .get(0)
    }

    /// A completed call with its minutes_transcribed row, as the app writes them.
    pub async fn completed_call(&self, user: Uuid, org: Uuid, minutes: i32) -> Uuid {
        let id = self
            .call(user, Some(org), "completed", Some(minutes), 1)
            .await;
        self.metric(org, minutes).await;
        id
    }

    pub async fn metric(&self, org: Uuid, minutes: i32) {
        self.client
            .execute(
                "INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
                 VALUES ($1, 'minutes_transcribed', $2::integer)",
                &[&org, &minutes],
            )
            .await
            .expect("insert usage metric");
    }

    pub async fn used_minutes(&self, org: Uuid) -> Option<i32> {
        self.client
            .query_one(
                "SELECT used_minutes::integer FROM public.organizations WHERE id = $1",
                &[&org],
            )
            .await
            .expect("read used_minutes")
            .get(0)
    }

    /// The counter as text, whatever its type.
    pub async fn used_minutes_text(&self, org: Uuid) -> Option<String> {
        self.client
            .query_one(
                "SELECT used_minutes::text FROM public.organizations WHERE id = $1",
                &[&org],
            )
            .await
            .expect("read used_minutes")
            .get(0)
    }

    pub async fn call_org(&self, call: Uuid) -> Option<Uuid> {
        self.client
            .query_one(
                "SELECT organization_id FROM public.calls WHERE id = $1",
                &[&call],
            )
            .await
            .expect("read call")
            .get(0)
    }

    /// `xmin` of every row of organizations and calls: unchanged means not written.
    pub async fn row_versions(&self) -> Vec<(Uuid, String)> {
        self.client
            .query(
                "SELECT id, xmin::text FROM public.organizations
                 UNION ALL SELECT id, xmin::text FROM public.calls ORDER BY 1",
                &[],
            )
            .await
            .expect("read xmin")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Status and error of the only run row.
    pub async fn only_run(&self) -> (String, Option<String>) {
        let row = self
            .client
            .query_one("SELECT status, error FROM reconciler.runs", &[])
            .await
            .expect("read the run row");
        (row.get(0), row.get(1))
    }

    /// Advisory locks held in this database (0 once every pass has released its lock).
    pub async fn advisory_locks(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await
    }

    /// Hold the reconciler's advisory lock (default key) on a session of its own, as a running
    /// pass elsewhere would, until the returned client is dropped.
    pub async fn hold_reconciler_lock(&self) -> Client {
        let other = connect(&self.url).await;
        other
            .query("SELECT pg_advisory_lock($1)", &[&default_lock_key()])
            .await
            .expect("take the advisory lock");
        other
    }

    /// Run the real binary against this database, settle time 0 unless `env` says otherwise.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_bin(args, &[("DATABASE_URL", self.url.as_str())], env).await
    }
}

/// What a sweep left: every counter, the journal (by organization name) and the recorded
/// ledger mismatches, in a form two databases can be compared by.
pub async fn outcome(url: &str) -> Vec<String> {
    let client = connect(url).await;
    let mut lines = Vec::new();
    for (what, sql) in [
        (
            "counter",
            "SELECT name || '=' || coalesce(used_minutes::text, 'NULL')
               FROM public.organizations ORDER BY name",
        ),
        (
            "adjustment",
            "SELECT o.name || ' ' || coalesce(a.old_used_minutes::text, 'NULL') || '->' || a.new_used_minutes || ' ' || a.reason
               FROM reconciler.adjustments a JOIN public.organizations o
                 ON o.id = a.organization_id ORDER BY o.name",
        ),
        (
            "mismatch",
            "SELECT o.name || ' ' || m.calls_minutes || '/' || m.metrics_minutes
               FROM reconciler.ledger_mismatches m JOIN public.organizations o
                 ON o.id = m.organization_id ORDER BY o.name",
        ),
        (
            "orphans",
            "SELECT count(*)::text FROM public.calls WHERE organization_id IS NULL",
        ),
    ] {
        for row in client.query(sql, &[]).await.unwrap() {
            lines.push(format!("{what} {}", row.get::<_, String>(0)));
        }
    }
    lines
}
