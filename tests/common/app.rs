//! A stand-in for the SynqAll web app writing beside the reconciler: each call is completed in
//! one transaction (the call row and its usage_metrics row), then, a moment later, its minutes
//! are added with `increment_used_minutes` in another, exactly the window in which a pass sees a
//! completed call whose increment is still coming. A known fraction of calls "crash" between the
//! two: their increment is lost, which is the drift the reconciler exists to repair.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::connect;

/// How the app behaves.
#[derive(Debug, Clone, Copy)]
pub struct AppConfig {
    pub writers: usize,
    pub calls_per_writer: usize,
    /// One call in `lose_one_in` loses its increment.
    pub lose_one_in: u64,
    /// Upper bound of the delay between completing a call and incrementing (must be shorter
    /// than the reconciler's settle time).
    pub max_increment_delay: Duration,
    pub pause_between_calls: Duration,
}

/// What the app did to one organization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgTally {
    pub completed_minutes: i64,
    pub applied_increments: i64,
    pub lost_increments: u32,
}

/// Per-organization tallies, shared by the writers.
pub type Tallies = Arc<Mutex<HashMap<Uuid, OrgTally>>>;

/// A tiny deterministic generator (xorshift64*): tests need repeatable traffic, not quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Run the writers to completion over `orgs` (each with a member user); returns the tallies.
pub async fn run_app(url: &str, orgs: &[(Uuid, Uuid)], config: AppConfig, seed: u64) -> Tallies {
    let tallies: Tallies = Arc::new(Mutex::new(
        orgs.iter()
            .map(|(org, _)| (*org, OrgTally::default()))
            .collect(),
    ));
    let mut writers = Vec::new();
    for w in 0..config.writers {
        let url = url.to_string();
        let orgs = orgs.to_vec();
        let tallies = tallies.clone();
        writers.push(tokio::spawn(async move {
            let client = connect(&url).await;
            let mut rng = Rng::new(seed + w as u64);
            for _ in 0..config.calls_per_writer {
                let (org, user) = orgs[rng.below(orgs.len() as u64) as usize];
                let minutes = 1 + rng.below(30) as i32;
                client
                    .batch_execute("BEGIN")
                    .await
                    .expect("begin call transaction");
                client
                    .execute(
                        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
                         VALUES ($1, $2, 'completed', $3)",
                        &[&user, &org, &minutes],
                    )
                    .await
                    .expect("complete a call");
                client
                    .execute(
                        "INSERT INTO public.usage_metrics (organization_id, user_id, metric_type, metric_value)
                         VALUES ($1, $2, 'minutes_transcribed', $3::integer)",
                        &[&org, &user, &minutes],
                    )
                    .await
                    .expect("record usage");
                client.batch_execute("COMMIT").await.expect("commit the call");
                tallies.lock().unwrap().get_mut(&org).unwrap().completed_minutes +=
                    i64::from(minutes);

                let delay = config.max_increment_delay.as_millis() as u64;
                tokio::time::sleep(Duration::from_millis(rng.below(delay.max(1)))).await;
                if rng.below(config.lose_one_in) == 0 {
                    // The app crashed between the two transactions.
                    tallies.lock().unwrap().get_mut(&org).unwrap().lost_increments += 1;
                } else {
                    client
                        .execute("SELECT public.increment_used_minutes($1, $2)", &[&org, &minutes])
                        .await
                        .expect("increment used_minutes");
                    tallies.lock().unwrap().get_mut(&org).unwrap().applied_increments +=
                        i64::from(minutes);
                }
                tokio::time::sleep(config.pause_between_calls).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    tallies
}
