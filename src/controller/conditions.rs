//! Conditions that move `lastTransitionTime` only when their status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{ConditionType, Reason};

/// What a condition should say now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Which condition.
    pub type_: ConditionType,
    /// True or false.
    pub status: bool,
    /// Why.
    pub reason: Reason,
    /// Human-readable explanation.
    pub message: String,
}

impl ConditionUpdate {
    /// A condition update.
    pub fn new(
        type_: ConditionType,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges `updates` into `existing`. A condition keeps its
/// `lastTransitionTime` unless its status flips (or it is new), so that
/// recomputing the same state yields exactly the same conditions.
pub fn merge_conditions(
    existing: &[Condition],
    updates: &[ConditionUpdate],
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    updates
        .iter()
        .map(|u| {
            let status = if u.status { "True" } else { "False" };
            let previous = existing.iter().find(|c| c.type_ == u.type_.as_str());
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: u.type_.as_str().to_owned(),
                status: status.to_owned(),
                reason: u.reason.as_str().to_owned(),
                message: u.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let first = merge_conditions(
            &[],
            &[ConditionUpdate::new(
                ConditionType::Ready,
                false,
                Reason::Planning,
                "a",
            )],
            Some(1),
            t(100),
        );
        let second = merge_conditions(
            &first,
            &[ConditionUpdate::new(
                ConditionType::Ready,
                false,
                Reason::Running,
                "b",
            )],
            Some(2),
            t(200),
        );
        assert_eq!(second[0].last_transition_time, t(100));
        assert_eq!(second[0].reason, "Running");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn flipped_status_moves_transition_time() {
        let first = merge_conditions(
            &[],
            &[ConditionUpdate::new(
                ConditionType::Ready,
                false,
                Reason::Planning,
                "a",
            )],
            Some(1),
            t(100),
        );
        let second = merge_conditions(
            &first,
            &[ConditionUpdate::new(
                ConditionType::Ready,
                true,
                Reason::Planning,
                "a",
            )],
            Some(1),
            t(200),
        );
        assert_eq!(second[0].last_transition_time, t(200));
        assert_eq!(second[0].status, "True");
    }

    #[test]
    fn recomputing_the_same_state_is_identical() {
        let updates = [
            ConditionUpdate::new(ConditionType::Ready, true, Reason::WorkersReady, "r"),
            ConditionUpdate::new(ConditionType::Failed, false, Reason::NoFailure, "f"),
        ];
        let first = merge_conditions(&[], &updates, Some(3), t(100));
        let again = merge_conditions(&first, &updates, Some(3), t(999));
        assert_eq!(first, again);
    }
}
