//! The benchmark's data: a seeded Supabase-like database (users with one membership each,
//! calls, a usage row per completed call, correct counters), the floor's two aggregates, the
//! seed's step 6, and the covering indexes `doctor` names for incremental lookups.

use std::process::Command;

use synqall_reconciler::fixture::create_standin_database;
use synqall_reconciler::local_pg::LocalCluster;
use tokio_postgres::Client;

use crate::measure::{connect, empty_config, measure_pass, BIN};

#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub orgs: i64,
    pub calls_per_org: i64,
}

impl Size {
    pub fn calls(self) -> i64 {
        self.orgs * self.calls_per_org
    }
}

/// The Supabase-like data: users with one membership each, calls (90% completed, durations
/// 1–30 min), one minutes_transcribed row per completed call, correct counters, and a few
/// orphaned calls that the setup pass attributes.
pub fn generate_sql(size: Size, orphans: f64, seed: f64) -> String {
    let Size {
        orgs,
        calls_per_org,
    } = size;
    let calls = orgs * calls_per_org;
    let users = orgs * 2;
    // Loading is made fast the way a restore is: no foreign-key triggers, indexes built once
    // after the data is in (the same indexes the stand-in schema has).
    format!(
        "SELECT setseed({seed});
         SET session_replication_role = replica;
         ALTER TABLE public.calls DROP CONSTRAINT calls_pkey;
         DROP INDEX public.calls_organization_id_idx, public.calls_user_id_idx;
         ALTER TABLE public.usage_metrics DROP CONSTRAINT usage_metrics_pkey;
         DROP INDEX public.usage_metrics_organization_id_idx;
         INSERT INTO public.organizations (id, name, used_minutes)
           SELECT md5('org' || i)::uuid, 'Org ' || i, 0 FROM generate_series(1, {orgs}) i;
         INSERT INTO auth.users (id) SELECT md5('user' || i)::uuid FROM generate_series(1, {users}) i;
         INSERT INTO public.user_organizations (user_id, organization_id, created_at)
           SELECT md5('user' || i)::uuid, md5('org' || (1 + i % {orgs}))::uuid, now() - interval '400 days'
             FROM generate_series(1, {users}) i;
         INSERT INTO public.calls (id, user_id, organization_id, status, duration_minutes, created_at)
           SELECT gen_random_uuid(), u.ids[1 + g % {users}],
                  CASE WHEN random() < {orphans} THEN NULL ELSE o.ids[1 + (1 + g % {users}) % {orgs}] END,
                  CASE WHEN random() < 0.9 THEN 'completed' ELSE 'failed' END,
                  1 + (random() * 29)::int,
                  now() - random() * interval '300 days'
             FROM (SELECT array_agg(md5('user' || i)::uuid ORDER BY i) AS ids
                     FROM generate_series(1, {users}) i) u,
                  (SELECT array_agg(md5('org' || i)::uuid ORDER BY i) AS ids
                     FROM generate_series(1, {orgs}) i) o,
                  generate_series(1, {calls}) g;
         INSERT INTO public.usage_metrics (organization_id, user_id, metric_type, metric_value, created_at)
           SELECT organization_id, user_id, 'minutes_transcribed', duration_minutes, created_at
             FROM public.calls WHERE status = 'completed' AND organization_id IS NOT NULL;
         ALTER TABLE public.calls ADD PRIMARY KEY (id);
         CREATE INDEX calls_organization_id_idx ON public.calls (organization_id);
         CREATE INDEX calls_user_id_idx ON public.calls (user_id);
         ALTER TABLE public.usage_metrics ADD PRIMARY KEY (id);
         CREATE INDEX usage_metrics_organization_id_idx ON public.usage_metrics (organization_id);
         RESET session_replication_role;"
    )
}

pub const CALLS_FLOOR: &str = "SELECT organization_id, sum(duration_minutes) FROM public.calls
                            WHERE status = 'completed' GROUP BY organization_id";
pub const METRICS_FLOOR: &str =
    "SELECT organization_id, sum(metric_value) FROM public.usage_metrics
                              WHERE metric_type = 'minutes_transcribed' GROUP BY organization_id";
/// The floor's two sums read through the covering indexes, as a sweep reads them when they
/// serve (index-only scans, grouped as they stream): the database's floor on that path.
pub fn index_floor() -> String {
    format!(
        "BEGIN READ ONLY; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashagg = off;
         {CALLS_FLOOR}; {METRICS_FLOOR}; COMMIT"
    )
}

/// The incident's step 6, cut verbatim from the shipped copy of its SQL, rolled back so the
/// data stays clean.
pub fn seed_step_6() -> String {
    let sql = synqall_reconciler::fixture::SEED_FIX_SQL;
    let start = sql.find("-- 6.").expect("step 6 in seed_fix.sql");
    let end = sql.find("-- 7.").expect("step 7 in seed_fix.sql");
    format!("BEGIN;\n{}\nROLLBACK;", &sql[start..end])
}

/// The covering indexes of docs/design.md ("Cost follows activity"), as `doctor` names them:
/// an incremental pass's per-organization lookups read only the index, and a sweep's
/// aggregates do too.
pub const COVERING_INDEXES: &str = "
  SET maintenance_work_mem = '1GB';
  CREATE INDEX IF NOT EXISTS calls_organization_usage_idx ON public.calls (organization_id)
    INCLUDE (status, duration_minutes, created_at);
  CREATE INDEX IF NOT EXISTS usage_metrics_organization_usage_idx
    ON public.usage_metrics (organization_id) INCLUDE (metric_type, metric_value, created_at);";

/// A fresh database `name` of `size`, migrated, loaded, with correct counters and the orphans
/// attributed by a first pass (which also builds the change tracking); vacuumed, analyzed and
/// checkpointed, so every measurement starts from the same clean state.
pub async fn load(
    cluster: &LocalCluster,
    name: &str,
    size: Size,
    orphans: f64,
    seed: f64,
) -> (String, Client) {
    let url = create_standin_database(cluster, name).await.unwrap();
    let setup = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("SYNQALL_RECONCILER_CONFIG", empty_config())
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let client = connect(&url).await;
    // Loading is not what is measured: no fsync while it runs (reloadable settings), then
    // durable again and a checkpoint before any measurement.
    // One statement per call: ALTER SYSTEM refuses to run in a multi-statement batch.
    for sql in [
        "ALTER SYSTEM SET fsync = off",
        "ALTER SYSTEM SET full_page_writes = off",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    client
        .batch_execute(&generate_sql(size, orphans, seed))
        .await
        .expect("generate data");
    client.batch_execute(COVERING_INDEXES).await.unwrap();
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    // Correct counters, then one pass to attribute the orphans: from here on, clean.
    client
        .batch_execute(
            "UPDATE public.organizations o SET used_minutes = t.total
               FROM (SELECT organization_id, sum(duration_minutes)::int AS total FROM public.calls
                      WHERE status = 'completed' GROUP BY 1) t
              WHERE t.organization_id = o.id",
        )
        .await
        .unwrap();
    measure_pass(&client, &url, &["--reconcile-now"], &[]).await;
    // The app writes a usage row for a call once it knows the organization: add the rows of
    // the calls just attributed, so both ledgers agree and a clean pass returns no row at all.
    client
        .batch_execute(
            "INSERT INTO public.usage_metrics (organization_id, user_id, metric_type, metric_value, created_at)
             SELECT c.organization_id, c.user_id, 'minutes_transcribed', c.duration_minutes, c.created_at
               FROM public.calls c JOIN reconciler.call_repairs r ON r.call_id = c.id
              WHERE c.status = 'completed'",
        )
        .await
        .unwrap();
    measure_pass(&client, &url, &["--reconcile-now"], &[]).await;
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
    for sql in [
        "ALTER SYSTEM RESET fsync",
        "ALTER SYSTEM RESET full_page_writes",
        "SELECT pg_reload_conf()",
        "CHECKPOINT",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    (url, client)
}
