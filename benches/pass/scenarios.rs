//! What happens to the data between passes: the app's activity (new completed calls, some
//! increments lost), planted drift, ledgers that disagree, and the app-side cost of the change
//! tracking's triggers (a call insert and an increment, with and without them).

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use uuid::Uuid;

/// The app at work since the last pass: `fraction` of organizations each complete three calls
/// (per call one INSERT into calls, one into usage_metrics and one `increment_used_minutes`, as
/// the app does); `lost` of them lose their last increment. Returns the active organizations
/// and how many increments were lost.
pub async fn activity(client: &Client, fraction: f64, lost: f64, round: usize) -> (Vec<Uuid>, i64) {
    let orgs = pick_orgs(client, fraction, &format!("active {round}")).await;
    // A member of each (one query: memberships have no index by organization).
    let members: std::collections::HashMap<Uuid, Uuid> = client
        .query(
            "SELECT DISTINCT ON (organization_id) organization_id, user_id
               FROM public.user_organizations WHERE organization_id = ANY ($1)
              ORDER BY organization_id, user_id",
            &[&orgs],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let insert = client
        .prepare(
            "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
             VALUES ($3, $1, 'completed', $2)",
        )
        .await
        .unwrap();
    let metric = client
        .prepare(
            "INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
             VALUES ($1, 'minutes_transcribed', $2::integer)",
        )
        .await
        .unwrap();
    let increment = client
        .prepare("SELECT public.increment_used_minutes($1, $2)")
        .await
        .unwrap();
    let every = (1.0 / lost.max(1e-9)).round().max(1.0) as usize;
    let mut lost = 0;
    for (i, org) in orgs.iter().enumerate() {
        for call in 0..3 {
            let minutes: i32 = 2 + call;
            client
                .execute(&insert, &[org, &minutes, &members.get(org)])
                .await
                .unwrap();
            client.execute(&metric, &[org, &minutes]).await.unwrap();
            if i % every == 0 && call == 2 {
                lost += 1;
                continue;
            }
            client.execute(&increment, &[org, &minutes]).await.unwrap();
        }
    }
    (orgs, lost)
}

/// `fraction` of organizations, a different sample for each `salt`.
async fn pick_orgs(client: &Client, fraction: f64, salt: &str) -> Vec<Uuid> {
    client
        .query(
            "SELECT id FROM public.organizations
              ORDER BY md5(id::text || $2)
              LIMIT (SELECT ceil(count(*) * $1::float8)::bigint FROM public.organizations)",
            &[&fraction, &salt],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Counters set wrong by hand (+7) in `fraction` of organizations.
pub async fn plant_drift(client: &Client, fraction: f64, salt: &str) -> Vec<Uuid> {
    let orgs = pick_orgs(client, fraction, salt).await;
    client
        .execute(
            "UPDATE public.organizations SET used_minutes = used_minutes + 7 WHERE id = ANY ($1)",
            &[&orgs],
        )
        .await
        .unwrap();
    orgs
}

/// How many of `orgs` have a counter that is not their completed calls' minutes.
pub async fn wrong_among(client: &Client, orgs: &[Uuid]) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM public.organizations o
              WHERE o.id = ANY ($1) AND o.used_minutes IS DISTINCT FROM
                    (SELECT COALESCE(sum(c.duration_minutes), 0) FROM public.calls c
                      WHERE c.organization_id = o.id AND c.status = 'completed')",
            &[&orgs],
        )
        .await
        .unwrap()
        .get(0)
}

/// The two ledgers of `fraction` of organizations disagree: one usage row each gains a
/// minute (the calls ledger, the truth, is unchanged, so no counter drifts).
pub async fn disagreeing_ledgers(client: &Client, fraction: f64) -> i64 {
    let orgs = pick_orgs(client, fraction, "mismatch").await;
    client
        .execute(
            "UPDATE public.usage_metrics m SET metric_value = m.metric_value + 1
               FROM (SELECT DISTINCT ON (organization_id) id FROM public.usage_metrics
                      WHERE organization_id = ANY ($1) ORDER BY organization_id, id) one
              WHERE m.id = one.id",
            &[&orgs],
        )
        .await
        .unwrap() as i64
}

/// One completed call of each organization `disagreeing_ledgers` picked rewritten, its values
/// unchanged (as attributing an orphaned call rewrites its row): the pages of calls lose the
/// all-visible mark, the ledgers still disagree as they did. Returns the rows rewritten.
pub async fn rewrite_calls(client: &Client, fraction: f64) -> u64 {
    let orgs = pick_orgs(client, fraction, "mismatch").await;
    client
        .execute(
            "UPDATE public.calls c SET duration_minutes = c.duration_minutes
               FROM (SELECT DISTINCT ON (organization_id) id FROM public.calls
                      WHERE organization_id = ANY ($1) AND status = 'completed'
                      ORDER BY organization_id, id) one
              WHERE c.id = one.id",
            &[&orgs],
        )
        .await
        .unwrap()
}

/// Median and mean latency of one app statement, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub mean_us: f64,
}

/// The app's two writes, one statement each (autocommit, as the app sends them), `n` times:
/// a completed call inserted, and an increment. With the triggers as they are.
pub async fn app_latency(client: &Client, n: usize) -> (Latency, Latency) {
    let orgs = pick_orgs(client, 0.01, "latency").await;
    let insert = client
        .prepare(
            "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
             VALUES (gen_random_uuid(), $1, 'completed', 1)",
        )
        .await
        .unwrap();
    let increment = client
        .prepare("SELECT public.increment_used_minutes($1, 1)")
        .await
        .unwrap();
    let mut inserts = Vec::with_capacity(n);
    let mut increments = Vec::with_capacity(n);
    for i in 0..n {
        let org = &orgs[i % orgs.len()];
        let started = Instant::now();
        client.execute(&insert, &[org]).await.unwrap();
        inserts.push(started.elapsed());
        let started = Instant::now();
        client.execute(&increment, &[org]).await.unwrap();
        increments.push(started.elapsed());
    }
    (latency(inserts), latency(increments))
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let mean = samples.iter().sum::<Duration>().as_secs_f64() / samples.len() as f64;
    Latency {
        p50_us: samples[samples.len() / 2].as_secs_f64() * 1e6,
        mean_us: mean * 1e6,
    }
}

/// Switch the change tracking's insert trigger on calls and update trigger on organizations
/// (the two the app's writes fire) off or on.
pub async fn tracking_triggers(client: &Client, enabled: bool) {
    let verb = if enabled { "ENABLE" } else { "DISABLE" };
    client
        .batch_execute(&format!(
            "ALTER TABLE public.calls {verb} TRIGGER synqall_reconciler_insert;
             ALTER TABLE public.organizations {verb} TRIGGER synqall_reconciler_update;"
        ))
        .await
        .unwrap();
}

/// Until the standby has replayed everything the primary wrote so far.
pub async fn wait_replayed(primary_url: &str, replica_url: &str) {
    let done = synqall_reconciler::fixture::wait_replayed(
        primary_url,
        replica_url,
        Duration::from_secs(600),
    )
    .await
    .expect("WAL positions");
    assert!(done, "the standby did not catch up");
}
