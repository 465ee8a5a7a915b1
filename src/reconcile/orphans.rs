//! Orphaned calls (`calls.organization_id IS NULL`): decide which organization owns each one
//! (docs/design.md, "What correct means"), attribute the decidable ones with a journal row in the same statement, and
//! report the rest.
//!
//! The rule replaces the seed's `LIMIT 1` without ORDER BY, which picked an arbitrary
//! membership: the user's only membership; else the one membership that existed when the call
//! was created; else the call is ambiguous and left alone (or, with
//! `orphans.ambiguous = earliest_membership`, given to the oldest membership). A user with no
//! membership is reported, never guessed.

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::queries::{PassQueries, ATTRIBUTE_CALLS};
use crate::config::AmbiguousPolicy;
use crate::db::lock::Fence;
use crate::db::{DbError, QueryContext};

/// An orphaned call and the organizations its user could own it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedCall {
    pub call_id: Uuid,
    pub user_id: Option<Uuid>,
    /// All memberships, oldest first.
    pub all_orgs: Vec<Uuid>,
    /// Memberships that existed when the call was created, oldest first.
    pub orgs_at_call_time: Vec<Uuid>,
}

/// The rule that decided an attribution; journalled in `call_repairs.rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    OnlyMembership,
    MembershipAtCallTime,
    EarliestMembership,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnlyMembership => "only_membership",
            Self::MembershipAtCallTime => "membership_at_call_time",
            Self::EarliestMembership => "earliest_membership",
        }
    }
}

/// What to do with one orphaned call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Attribute {
        org_id: Uuid,
        rule: Rule,
    },
    /// Several candidates and no rule picks one: left alone, reported.
    Ambiguous {
        candidates: Vec<Uuid>,
    },
    /// The user belongs to no (existing) organization, or the call has no user.
    NoMembership,
}

fn distinct(ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = Vec::with_capacity(ids.len());
    for id in ids {
        if !seen.contains(id) {
            seen.push(*id);
        }
    }
    seen
}

/// Apply the attribution rule to one call.
pub fn decide(call: &OrphanedCall, policy: AmbiguousPolicy) -> Decision {
    let all = distinct(&call.all_orgs);
    let at_call_time = distinct(&call.orgs_at_call_time);
    match (all.as_slice(), at_call_time.as_slice()) {
        ([], _) => Decision::NoMembership,
        ([only], _) => Decision::Attribute {
            org_id: *only,
            rule: Rule::OnlyMembership,
        },
        (_, [only]) => Decision::Attribute {
            org_id: *only,
            rule: Rule::MembershipAtCallTime,
        },
        ([earliest, ..], _) if policy == AmbiguousPolicy::EarliestMembership => {
            Decision::Attribute {
                org_id: *earliest,
                rule: Rule::EarliestMembership,
            }
        }
        _ => Decision::Ambiguous { candidates: all },
    }
}

/// Read every orphaned call with its candidate organizations.
///
/// # Errors
/// The query failed.
pub async fn find(
    client: &impl GenericClient,
    queries: &PassQueries,
) -> Result<Vec<OrphanedCall>, DbError> {
    let rows = client
        .query(queries.orphaned_calls.as_str(), &[])
        .await
        .context("read orphaned calls")?;
    Ok(rows
        .iter()
        .map(|r| OrphanedCall {
            call_id: r.get("call_id"),
            user_id: r.get("user_id"),
            all_orgs: r.get("all_orgs"),
            orgs_at_call_time: r.get("orgs_at_call_time"),
        })
        .collect())
}

/// One call to attribute.
#[derive(Debug, Clone, Copy)]
pub struct Attribution {
    pub call_id: Uuid,
    pub org_id: Uuid,
    pub rule: Rule,
}

/// Attribute a batch in one statement with its journal rows, fenced; returns the ids of the
/// calls actually attributed (a call given an organization meanwhile is skipped).
///
/// # Errors
/// The statement failed; nothing of the batch was written.
pub async fn attribute(
    client: &impl GenericClient,
    run_id: Uuid,
    batch: &[Attribution],
    fence: Fence,
) -> Result<Vec<Uuid>, DbError> {
    let call_ids: Vec<Uuid> = batch.iter().map(|a| a.call_id).collect();
    let org_ids: Vec<Uuid> = batch.iter().map(|a| a.org_id).collect();
    let rules: Vec<&str> = batch.iter().map(|a| a.rule.as_str()).collect();
    let rows = client
        .query(
            ATTRIBUTE_CALLS,
            &[&call_ids, &org_ids, &rules, &run_id, &fence.key, &fence.pid],
        )
        .await
        .context("attribute orphaned calls")?;
    let attributed: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    // Fewer than asked: attributed meanwhile by someone else, or fenced out.
    if attributed.len() < batch.len() && !fence.holds(client).await? {
        return Err(DbError::Fenced);
    }
    Ok(attributed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn call(all: &[u128], at_call_time: &[u128]) -> OrphanedCall {
        OrphanedCall {
            call_id: id(100),
            user_id: Some(id(200)),
            all_orgs: all.iter().map(|n| id(*n)).collect(),
            orgs_at_call_time: at_call_time.iter().map(|n| id(*n)).collect(),
        }
    }

    #[test]
    fn only_membership_wins_even_if_it_started_after_the_call() {
        assert_eq!(
            decide(&call(&[1], &[]), AmbiguousPolicy::Skip),
            Decision::Attribute {
                org_id: id(1),
                rule: Rule::OnlyMembership
            }
        );
    }

    #[test]
    fn membership_at_call_time_decides_between_several() {
        assert_eq!(
            decide(&call(&[1, 2], &[1]), AmbiguousPolicy::Skip),
            Decision::Attribute {
                org_id: id(1),
                rule: Rule::MembershipAtCallTime
            }
        );
    }

    #[test]
    fn ambiguous_orphan_is_left_alone_by_default() {
        assert_eq!(
            decide(&call(&[1, 2], &[1, 2]), AmbiguousPolicy::Skip),
            Decision::Ambiguous {
                candidates: vec![id(1), id(2)]
            }
        );
        assert_eq!(
            decide(&call(&[1, 2], &[]), AmbiguousPolicy::Skip),
            Decision::Ambiguous {
                candidates: vec![id(1), id(2)]
            }
        );
    }

    #[test]
    fn earliest_membership_policy_takes_the_oldest() {
        assert_eq!(
            decide(&call(&[2, 1], &[2, 1]), AmbiguousPolicy::EarliestMembership),
            Decision::Attribute {
                org_id: id(2),
                rule: Rule::EarliestMembership
            }
        );
    }

    #[test]
    fn user_without_membership_is_reported_not_guessed() {
        for policy in [AmbiguousPolicy::Skip, AmbiguousPolicy::EarliestMembership] {
            assert_eq!(decide(&call(&[], &[]), policy), Decision::NoMembership);
        }
    }

    #[test]
    fn duplicate_memberships_count_once() {
        assert_eq!(
            decide(&call(&[1, 1], &[1]), AmbiguousPolicy::Skip),
            Decision::Attribute {
                org_id: id(1),
                rule: Rule::OnlyMembership
            }
        );
    }
}
