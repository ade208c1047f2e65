//! How many machines a target should have: [`Bounds`] and [`Targets`].

use serde::{Deserialize, Serialize};

/// An optional lower and upper bound on a count. `None` means "no opinion".
///
/// Serialises as fly-autoscaler's `eval` output: `{"min":N,"max":N}` with `null` for an
/// undefined side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Scale up while below this.
    pub min: Option<u32>,
    /// Scale down while above this.
    pub max: Option<u32>,
}

impl Bounds {
    /// No bound on either side.
    pub const NONE: Bounds = Bounds {
        min: None,
        max: None,
    };

    /// `min == max == n`.
    pub fn exactly(n: u32) -> Bounds {
        Bounds {
            min: Some(n),
            max: Some(n),
        }
    }

    /// Both sides given.
    pub fn between(min: u32, max: u32) -> Bounds {
        Bounds {
            min: Some(min),
            max: Some(max),
        }
    }

    /// Whether neither side is set.
    pub fn is_none(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }

    /// Whether `n` satisfies both sides.
    pub fn contains(&self, n: u32) -> bool {
        self.min.is_none_or(|min| n >= min) && self.max.is_none_or(|max| n <= max)
    }

    /// The count closest to `current` inside the bounds (`current` itself when inside).
    /// When `min > max`, `max` wins: never more than max is the stronger safety rule.
    pub fn nearest(&self, current: u32) -> u32 {
        let mut n = current;
        if let Some(min) = self.min {
            n = n.max(min);
        }
        if let Some(max) = self.max {
            n = n.min(max);
        }
        n
    }
}

/// The desired machine counts of one target, as the policy decided them for one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    /// Bounds on machines that exist (created, in any state).
    pub created: Bounds,
    /// Bounds on machines started (or starting).
    pub started: Bounds,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_and_contains() {
        let b = Bounds::between(2, 5);
        assert_eq!(b.nearest(0), 2);
        assert_eq!(b.nearest(3), 3);
        assert_eq!(b.nearest(9), 5);
        assert!(b.contains(2) && b.contains(5) && !b.contains(6) && !b.contains(1));
        assert_eq!(Bounds::between(5, 2).nearest(0), 2);
        assert_eq!(Bounds::NONE.nearest(7), 7);
        assert_eq!(
            serde_json::to_string(&Targets {
                created: Bounds::exactly(3),
                started: Bounds::NONE
            })
            .unwrap(),
            r#"{"created":{"min":3,"max":3},"started":{"min":null,"max":null}}"#
        );
    }
}
