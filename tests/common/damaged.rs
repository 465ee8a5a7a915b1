//! The damaged database most end-to-end tests start from: every kind of counter damage
//! (lost and doubled increments, a NULL counter, one zeroed by hand) and every kind of orphan
//! (only membership, membership at call time, ambiguous, no membership), beside a clean
//! organization and one with only pending calls.

use uuid::Uuid;

use super::TestDb;

/// The fixture of acceptance 1: every kind of counter damage and every kind of orphan.
pub struct Damaged {
    pub lost: Uuid,
    pub doubled: Uuid,
    pub null_counter: Uuid,
    pub zeroed: Uuid,
    pub clean: Uuid,
    pub pending_only: Uuid,
    pub only_membership_call: Uuid,
    pub at_call_time_call: Uuid,
    pub ambiguous_call: Uuid,
    pub no_membership_call: Uuid,
    pub attributed_call: Uuid,
}

impl Damaged {
    pub fn drifted(&self) -> [Uuid; 4] {
        [self.lost, self.doubled, self.null_counter, self.zeroed]
    }
}

pub async fn damaged_db() -> (TestDb, Damaged) {
    let db = TestDb::migrated().await;
    let lost = db.org("Lost increments", Some(10)).await;
    let doubled = db.org("Doubled \"retry\" increments", Some(30)).await;
    let null_counter = db.org("NULL counter", None).await;
    let zeroed = db.org("Zeroed by hand", Some(0)).await;
    let clean = db.org("Clean", Some(5)).await;
    let pending_only = db.org("Pending only", Some(0)).await;

    let u_lost = db.user().await;
    db.member(u_lost, lost, 300).await;
    db.completed_call(u_lost, lost, 10).await;
    db.completed_call(u_lost, lost, 20).await;
    let u_doubled = db.user().await;
    db.member(u_doubled, doubled, 300).await;
    db.completed_call(u_doubled, doubled, 15).await;
    let u_null = db.user().await;
    db.member(u_null, null_counter, 300).await;
    db.completed_call(u_null, null_counter, 7).await;
    let u_zero = db.user().await;
    db.member(u_zero, zeroed, 300).await;
    db.completed_call(u_zero, zeroed, 12).await;
    let u_clean = db.user().await;
    db.member(u_clean, clean, 300).await;
    db.completed_call(u_clean, clean, 5).await;
    db.call(u_clean, Some(pending_only), "processing", Some(50), 1)
        .await;
    db.call(u_clean, Some(pending_only), "failed", Some(40), 1)
        .await;

    // Orphans. Only membership: the lost org's user; attributed, 9 more minutes for `lost`.
    let only_membership_call = db.call(u_lost, None, "completed", Some(9), 3).await;
    // Two memberships, the call predates the second: belongs to the first (doubled).
    let u_two = db.user().await;
    db.member(u_two, doubled, 100).await;
    db.member(u_two, null_counter, 10).await;
    let at_call_time_call = db.call(u_two, None, "completed", Some(4), 50).await;
    // An attributed call of the same user in the other org must not move.
    let attributed_call = db
        .call(u_two, Some(null_counter), "completed", Some(2), 5)
        .await;
    // Two memberships, both older than the call: ambiguous.
    let u_amb = db.user().await;
    db.member(u_amb, zeroed, 100).await;
    db.member(u_amb, clean, 100).await;
    let ambiguous_call = db.call(u_amb, None, "completed", Some(6), 5).await;
    // No membership at all.
    let u_none = db.user().await;
    let no_membership_call = db.call(u_none, None, "completed", Some(8), 5).await;

    (
        db,
        Damaged {
            lost,
            doubled,
            null_counter,
            zeroed,
            clean,
            pending_only,
            only_membership_call,
            at_call_time_call,
            ambiguous_call,
            no_membership_call,
            attributed_call,
        },
    )
}
