//! Property tests. Over random ledgers, counters and orphan layouts, one pass reaches the truth
//! of docs/design.md ("What correct means", computed here independently), a second pass changes
//! nothing, and the journal replays to the same counters. Over random histories after that
//! (calls completed with their increment lost, made or doubled; old calls edited or their
//! status flipped; counters set by hand; usage rows), incremental passes reach exactly the
//! state full passes reach, pass by pass, and a final sweep finds nothing they missed. Each
//! case gets its own databases, cloned from a migrated template.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use synqall_reconciler::config::{Secret, Settings};
use synqall_reconciler::db::Database;
use synqall_reconciler::db::DatabaseTarget;
use synqall_reconciler::fixture::{create_standin_database, execute_sql};
use synqall_reconciler::reconcile::control::PassControl;
use synqall_reconciler::reconcile::{
    run_once, PassKind, PassOptions, PassOutcome, PassReport, RunMode,
};
use uuid::Uuid;

#[derive(Debug, Clone)]
struct CallSpec {
    user: usize,
    org: Option<usize>,
    completed: bool,
    minutes: Option<i32>,
    days_ago: i32,
}

#[derive(Debug, Clone)]
struct Layout {
    counters: Vec<Option<i32>>,
    /// Per user: (org, joined days ago).
    memberships: Vec<Vec<(usize, i32)>>,
    calls: Vec<CallSpec>,
    metrics: Vec<(usize, i32)>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (1usize..5, 1usize..5).prop_flat_map(|(orgs, users)| {
        let counters = prop::collection::vec(prop::option::weighted(0.85, 0i32..120), orgs);
        let memberships =
            prop::collection::vec(prop::collection::vec((0..orgs, 0i32..60), 0..3), users);
        let call = (
            0..users,
            prop::option::weighted(0.7, 0..orgs),
            prop::bool::weighted(0.8),
            prop::option::weighted(0.9, -5i32..40),
            0i32..60,
        )
            .prop_map(|(user, org, completed, minutes, days_ago)| CallSpec {
                user,
                org,
                completed,
                minutes,
                days_ago,
            });
        let calls = prop::collection::vec(call, 0..20);
        let metrics = prop::collection::vec((0..orgs, 0i32..40), 0..6);
        (counters, memberships, calls, metrics).prop_map(
            |(counters, memberships, calls, metrics)| {
                // One membership per (user, org), as the table's unique key demands.
                let memberships = memberships
                    .into_iter()
                    .map(|ms| {
                        let mut seen = Vec::new();
                        ms.into_iter()
                            .filter(|(org, _)| {
                                let new = !seen.contains(org);
                                seen.push(*org);
                                new
                            })
                            .collect()
                    })
                    .collect();
                Layout {
                    counters,
                    memberships,
                    calls,
                    metrics,
                }
            },
        )
    })
}

/// docs/design.md ("What correct means"), independently: where each orphan goes, and what each counter should be.
fn truth(l: &Layout) -> (Vec<Option<usize>>, Vec<i64>) {
    let owners: Vec<Option<usize>> = l
        .calls
        .iter()
        .map(|c| {
            c.org.or_else(|| {
                let ms = &l.memberships[c.user];
                match ms.len() {
                    0 => None,
                    1 => Some(ms[0].0),
                    _ => {
                        // Memberships that existed when the call was made (joined no later).
                        let then: Vec<usize> = ms
                            .iter()
                            .filter(|(_, joined)| *joined >= c.days_ago)
                            .map(|(org, _)| *org)
                            .collect();
                        (then.len() == 1).then(|| then[0])
                    }
                }
            })
        })
        .collect();
    let mut expected = vec![0i64; l.counters.len()];
    for (call, owner) in l.calls.iter().zip(&owners) {
        if let (Some(org), true) = (owner, call.completed) {
            expected[*org] += i64::from(call.minutes.unwrap_or(0).max(0));
        }
    }
    (owners, expected)
}

const TIME_BASE: &str = "2026-06-01T00:00:00Z";
static NEXT_CASE: AtomicUsize = AtomicUsize::new(0);

struct Ids {
    orgs: Vec<Uuid>,
    users: Vec<Uuid>,
    calls: Vec<Uuid>,
}

async fn load(url: &str, l: &Layout) -> Ids {
    let db = common::connect(url).await;
    let mut orgs = Vec::new();
    for (i, counter) in l.counters.iter().enumerate() {
        let id: Uuid = db
            .query_one(
                "INSERT INTO public.organizations (name, used_minutes) VALUES ($1, $2) RETURNING id",
                &[&format!("org {i}"), counter],
            )
            .await
            .unwrap()
            .get(0);
        orgs.push(id);
    }
    let mut users = Vec::new();
    for memberships in &l.memberships {
        let user: Uuid = db
            .query_one("INSERT INTO auth.users DEFAULT VALUES RETURNING id", &[])
            .await
            .unwrap()
            .get(0);
        for (org, joined) in memberships {
            db.execute(
                "INSERT INTO public.user_organizations (user_id, organization_id, created_at)
                 VALUES ($1, $2, $3::text::timestamptz - make_interval(days => $4))",
                &[&user, &orgs[*org], &TIME_BASE, joined],
            )
            .await
            .unwrap();
        }
        users.push(user);
    }
    let mut calls = Vec::new();
    for c in &l.calls {
        let id: Uuid = db
            .query_one(
                "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at)
                 VALUES ($1, $2, $3, $4, $5::text::timestamptz - make_interval(days => $6)) RETURNING id",
                &[
                    &users[c.user],
                    &c.org.map(|o| orgs[o]),
                    &if c.completed { "completed" } else { "failed" },
                    &c.minutes,
                    &TIME_BASE,
                    &c.days_ago,
                ],
            )
            .await
            .unwrap()
            .get(0);
        calls.push(id);
    }
    for (org, minutes) in &l.metrics {
        db.execute(
            "INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
             VALUES ($1, 'minutes_transcribed', $2::integer)",
            &[&orgs[*org], minutes],
        )
        .await
        .unwrap();
    }
    Ids { orgs, users, calls }
}

/// `xmin` of every organization and call: unchanged means not written.
async fn versions(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT xmin::text FROM public.organizations UNION ALL SELECT xmin::text FROM public.calls",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

async fn pass(db: &Database, settings: &Settings) -> PassReport {
    let options = PassOptions {
        mode: RunMode::Once,
        kind: PassKind::Sweep,
        dry_run: false,
        allow_mass_correction: false,
    };
    match run_once(db, settings, options, &PassControl::default())
        .await
        .unwrap()
    {
        PassOutcome::Completed(report) => report,
        PassOutcome::LockHeld => panic!("nobody else holds the lock"),
    }
}

async fn check_case(template: &str, settings: &Settings, l: &Layout) -> Result<(), TestCaseError> {
    let cluster = common::cluster();
    let name = format!("prop_{}", NEXT_CASE.fetch_add(1, Ordering::SeqCst));
    execute_sql(
        &cluster.url("postgres"),
        &format!("CREATE DATABASE {name} TEMPLATE {template}"),
    )
    .await
    .unwrap();
    let url = cluster.url(&name);
    let ids = load(&url, l).await;
    let target = DatabaseTarget::parse("test", Secret::new(url.clone())).unwrap();
    let db = Database::new(&target, settings).unwrap();
    let client = common::connect(&url).await;
    let (owners, expected) = truth(l);

    pass(&db, settings).await;
    for (i, org) in ids.orgs.iter().enumerate() {
        let used: Option<i32> = client
            .query_one(
                "SELECT used_minutes FROM public.organizations WHERE id = $1",
                &[org],
            )
            .await
            .unwrap()
            .get(0);
        prop_assert_eq!(used.map(i64::from), Some(expected[i]), "org {}", i);
    }
    for (i, call) in ids.calls.iter().enumerate() {
        let owner: Option<Uuid> = client
            .query_one(
                "SELECT organization_id FROM public.calls WHERE id = $1",
                &[call],
            )
            .await
            .unwrap()
            .get(0);
        prop_assert_eq!(owner, owners[i].map(|o| ids.orgs[o]), "call {}", i);
    }

    let before = versions(&client).await;
    let second = pass(&db, settings).await;
    prop_assert_eq!(second.drifted, 0);
    prop_assert_eq!(second.orphans_fixed, 0);
    prop_assert_eq!(versions(&client).await, before, "the second pass wrote");

    // Replaying the journal over the initial counters gives the final ones.
    let mut replay: HashMap<Uuid, Option<i32>> = ids
        .orgs
        .iter()
        .zip(&l.counters)
        .map(|(id, c)| (*id, *c))
        .collect();
    for row in client
        .query(
            "SELECT organization_id, old_used_minutes::int, new_used_minutes::int
               FROM reconciler.adjustments ORDER BY id",
            &[],
        )
        .await
        .unwrap()
    {
        let org: Uuid = row.get(0);
        prop_assert_eq!(
            replay[&org],
            row.get::<_, Option<i32>>(1),
            "journal old value"
        );
        replay.insert(org, Some(row.get(2)));
    }
    for (i, org) in ids.orgs.iter().enumerate() {
        prop_assert_eq!(
            replay[org].map(i64::from),
            Some(expected[i]),
            "replayed org {}",
            i
        );
    }
    drop(client);
    drop(db);
    Ok(())
}

#[test]
fn one_pass_reaches_the_truth_a_second_changes_nothing_and_the_journal_replays() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = common::cluster();
    let template = "prop_template";
    let settings = Settings::load_from(
        Some(std::path::Path::new(common::empty_config_file())),
        [(
            "SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS".to_string(),
            "0".to_string(),
        )],
    )
    .unwrap();
    runtime.block_on(async {
        let url = create_standin_database(cluster, template).await.unwrap();
        let target = DatabaseTarget::parse("test", Secret::new(url)).unwrap();
        synqall_reconciler::migrate(&settings, &target)
            .await
            .unwrap();
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&layout(), |l| {
            runtime.block_on(check_case(template, &settings, &l))
        })
        .unwrap();
}

/// What the app (or a person) does between two passes.
#[derive(Debug, Clone)]
enum Event {
    /// A completed call; `increment`: 0 (the increment was lost), 1 (as the app does), 2
    /// (doubled by a retry).
    Call {
        user: usize,
        org: Option<usize>,
        minutes: i32,
        increment: u8,
    },
    /// An old call's duration edited.
    EditCall { call: usize, minutes: i32 },
    /// An old call's status flipped (completed ↔ failed).
    FlipStatus { call: usize },
    /// A counter set by hand.
    SetCounter { org: usize, value: i32 },
    /// A usage_metrics row.
    Metric { org: usize, minutes: i32 },
    /// A pass: incremental in one database, full in the other.
    Pass,
}

fn history(orgs: usize, users: usize) -> impl Strategy<Value = Vec<Event>> {
    let event = prop_oneof![
        4 => (0..users, prop::option::weighted(0.85, 0..orgs), 0i32..30, 0u8..3).prop_map(
            |(user, org, minutes, increment)| Event::Call { user, org, minutes, increment }
        ),
        1 => (0usize..64, -3i32..30).prop_map(|(call, minutes)| Event::EditCall { call, minutes }),
        1 => (0usize..64).prop_map(|call| Event::FlipStatus { call }),
        1 => (0..orgs, 0i32..80).prop_map(|(org, value)| Event::SetCounter { org, value }),
        1 => (0..orgs, 0i32..30).prop_map(|(org, minutes)| Event::Metric { org, minutes }),
        2 => Just(Event::Pass),
    ];
    prop::collection::vec(event, 1..24)
}

/// Apply one event to a database; calls are addressed by their index among all calls (the
/// layout's first, then the history's).
async fn apply(client: &tokio_postgres::Client, ids: &mut Ids, e: &Event) {
    match e {
        Event::Call {
            user,
            org,
            minutes,
            increment,
        } => {
            let org = org.map(|o| ids.orgs[o]);
            let id: Uuid = client
                .query_one(
                    "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
                     VALUES ($1, $2, 'completed', $3) RETURNING id",
                    &[&ids.users[*user], &org, minutes],
                )
                .await
                .unwrap()
                .get(0);
            ids.calls.push(id);
            if let Some(org) = org {
                for _ in 0..*increment {
                    client
                        .execute(
                            "UPDATE public.organizations
                                SET used_minutes = COALESCE(used_minutes, 0) + $2 WHERE id = $1",
                            &[&org, minutes],
                        )
                        .await
                        .unwrap();
                }
            }
        }
        Event::EditCall { call, minutes } if !ids.calls.is_empty() => {
            let id = ids.calls[call % ids.calls.len()];
            client
                .execute(
                    "UPDATE public.calls SET duration_minutes = $2 WHERE id = $1",
                    &[&id, minutes],
                )
                .await
                .unwrap();
        }
        Event::FlipStatus { call } if !ids.calls.is_empty() => {
            let id = ids.calls[call % ids.calls.len()];
            client
                .execute(
                    "UPDATE public.calls SET status = CASE status WHEN 'completed' THEN 'failed'
                       ELSE 'completed' END WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
        }
        Event::SetCounter { org, value } => {
            client
                .execute(
                    "UPDATE public.organizations SET used_minutes = $2 WHERE id = $1",
                    &[&ids.orgs[*org], value],
                )
                .await
                .unwrap();
        }
        Event::Metric { org, minutes } => {
            client
                .execute(
                    "INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
                     VALUES ($1, 'minutes_transcribed', $2::integer)",
                    &[&ids.orgs[*org], minutes],
                )
                .await
                .unwrap();
        }
        Event::EditCall { .. } | Event::FlipStatus { .. } | Event::Pass => {}
    }
}

/// Counters, call owners and recorded ledger mismatches, in a comparable order.
async fn state(client: &tokio_postgres::Client, ids: &Ids) -> Vec<String> {
    let mut out = Vec::new();
    for (i, org) in ids.orgs.iter().enumerate() {
        let used: Option<i32> = client
            .query_one(
                "SELECT used_minutes FROM public.organizations WHERE id = $1",
                &[org],
            )
            .await
            .unwrap()
            .get(0);
        let mismatch: Option<String> = client
            .query_opt(
                "SELECT calls_minutes || '/' || metrics_minutes FROM reconciler.ledger_mismatches
                  WHERE organization_id = $1",
                &[org],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        out.push(format!("org {i}: used {used:?}, mismatch {mismatch:?}"));
    }
    for (i, call) in ids.calls.iter().enumerate() {
        let owner: Option<Uuid> = client
            .query_one(
                "SELECT organization_id FROM public.calls WHERE id = $1",
                &[call],
            )
            .await
            .unwrap()
            .get(0);
        let owner = owner.and_then(|o| ids.orgs.iter().position(|x| *x == o));
        out.push(format!("call {i}: org {owner:?}"));
    }
    out
}

async fn run(db: &Database, settings: &Settings, kind: PassKind) -> PassReport {
    let options = PassOptions {
        mode: RunMode::Once,
        kind,
        dry_run: false,
        allow_mass_correction: false,
    };
    match run_once(db, settings, options, &PassControl::default())
        .await
        .unwrap()
    {
        PassOutcome::Completed(report) => report,
        PassOutcome::LockHeld => panic!("nobody else holds the lock"),
    }
}

/// One database of the pair: a clone of the template with the layout loaded.
async fn twin(
    template: &str,
    settings: &Settings,
    l: &Layout,
) -> (Database, tokio_postgres::Client, Ids) {
    let cluster = common::cluster();
    let name = format!("prop_{}", NEXT_CASE.fetch_add(1, Ordering::SeqCst));
    execute_sql(
        &cluster.url("postgres"),
        &format!("CREATE DATABASE {name} TEMPLATE {template}"),
    )
    .await
    .unwrap();
    let url = cluster.url(&name);
    let ids = load(&url, l).await;
    let target = DatabaseTarget::parse("test", Secret::new(url.clone())).unwrap();
    let db = Database::new(&target, settings).unwrap();
    let client = common::connect(&url).await;
    (db, client, ids)
}

async fn check_history(
    template: &str,
    settings: &Settings,
    l: &Layout,
    events: &[Event],
) -> Result<(), TestCaseError> {
    let (inc_db, inc, mut inc_ids) = twin(template, settings, l).await;
    let (full_db, full, mut full_ids) = twin(template, settings, l).await;
    // Both start with a sweep (the incremental side's builds the tracking).
    run(&inc_db, settings, PassKind::Sweep).await;
    run(&full_db, settings, PassKind::Sweep).await;
    for (step, e) in events.iter().enumerate() {
        apply(&inc, &mut inc_ids, e).await;
        apply(&full, &mut full_ids, e).await;
        if let Event::Pass = e {
            let report = run(&inc_db, settings, PassKind::Incremental).await;
            prop_assert_eq!(report.kind, PassKind::Incremental, "step {}", step);
            run(&full_db, settings, PassKind::Sweep).await;
            prop_assert_eq!(
                state(&inc, &inc_ids).await,
                state(&full, &full_ids).await,
                "after the pass of step {}",
                step
            );
        }
    }
    // The end: one more of each, then the sweep on the incremental side finds nothing to fix
    // and nothing wrong with the tracking.
    run(&inc_db, settings, PassKind::Incremental).await;
    run(&full_db, settings, PassKind::Sweep).await;
    prop_assert_eq!(
        state(&inc, &inc_ids).await,
        state(&full, &full_ids).await,
        "at the end"
    );
    let sweep = run(&inc_db, settings, PassKind::Sweep).await;
    prop_assert_eq!(
        sweep.drifted,
        0,
        "the sweep found drift the incremental passes missed"
    );
    Ok(())
}

#[test]
fn incremental_passes_reach_the_state_full_passes_reach() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = common::cluster();
    let template = "prop_history_template";
    let settings = Settings::load_from(
        Some(std::path::Path::new(common::empty_config_file())),
        [(
            "SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS".to_string(),
            "0".to_string(),
        )],
    )
    .unwrap();
    runtime.block_on(async {
        let url = create_standin_database(cluster, template).await.unwrap();
        let target = DatabaseTarget::parse("test", Secret::new(url)).unwrap();
        synqall_reconciler::migrate(&settings, &target)
            .await
            .unwrap();
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = layout().prop_flat_map(|l| {
        let (orgs, users) = (l.counters.len(), l.memberships.len());
        (Just(l), history(orgs, users))
    });
    runner
        .run(&case, |(l, events)| {
            runtime.block_on(check_history(template, &settings, &l, &events))
        })
        .unwrap();
}
