//! Rendezvous (highest random weight) hashing of target names over replica names: every
//! replica computes the same owner for a target from the same list of live replicas, with no
//! coordination beyond that list, and a change of the list moves only the targets of the
//! replica that left (to the others) or only targets to the replica that joined.
//!
//! The score is FNV-1a (64 bit) over `replica`, a `0xff` separator byte (which no UTF-8 text
//! contains) and `target`, passed through the SplitMix64 finalizer so that similar names get
//! unrelated scores. Both are fixed, documented functions (not `std`'s hasher, whose output
//! may change between Rust releases): replicas built by different compilers agree.
//!
//! ```
//! use fleetscale_etcd::rendezvous::owner;
//!
//! let replicas = ["a".to_string(), "b".to_string(), "c".to_string()];
//! let o = owner("app-17", &replicas).unwrap();
//! // Without a replica that did not own it, the owner stays.
//! let others: Vec<String> = replicas.iter().filter(|r| *r != o && r.as_str() != "c").cloned().collect();
//! let mut fewer = others.clone();
//! fewer.push(o.to_string());
//! assert_eq!(owner("app-17", &fewer), Some(o));
//! ```

/// The score of `target` on `replica`: the replica with the highest score owns the target.
pub fn score(replica: &str, target: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in replica
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0xffu8))
        .chain(target.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    // SplitMix64's finalizer (Steele, Lea, Flood 2014).
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The replica that owns `target` among `replicas` (the highest score; equal scores go to the
/// smaller name, so the answer never depends on the list's order). `None` for no replica.
pub fn owner<'a>(target: &str, replicas: &'a [String]) -> Option<&'a str> {
    replicas
        .iter()
        .map(|r| (score(r, target), r.as_str()))
        .max_by(|(sa, ra), (sb, rb)| sa.cmp(sb).then_with(|| rb.cmp(ra)))
        .map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn scores_are_fixed_values() {
        // Pinned (computed independently from the definition in the module docs): a change here
        // would make replicas of two versions disagree on owners.
        assert_eq!(score("a", "b"), score("a", "b"));
        assert_ne!(score("a", "b"), score("b", "a"));
        assert_ne!(score("ab", "c"), score("a", "bc"), "the separator matters");
        assert_eq!(score("replica-1", "app-1"), 0x13a9_d73d_2cfe_6ab3);
    }

    #[test]
    fn shares_are_even_over_ten_thousand_targets() {
        let targets = names("tenant-app-", 10_000);
        for n in [2usize, 3, 4, 8] {
            let replicas = names("host-", n);
            let mut counts = vec![0usize; n];
            for t in &targets {
                let o = owner(t, &replicas).unwrap();
                counts[replicas.iter().position(|r| r == o).unwrap()] += 1;
            }
            let fair = 10_000 / n;
            for c in &counts {
                // Within 10 % of a fair share (a binomial spread is about 1 % here).
                assert!(c.abs_diff(fair) * 10 < fair, "{n} replicas: {counts:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn the_owner_is_a_replica_and_ignores_order(
            target in ".{0,20}",
            mut replicas in proptest::collection::vec("[a-z0-9-]{1,12}", 1..8),
        ) {
            let o = owner(&target, &replicas).unwrap().to_string();
            prop_assert!(replicas.contains(&o));
            replicas.reverse();
            prop_assert_eq!(owner(&target, &replicas).unwrap(), o.as_str());
        }

        #[test]
        fn a_leaving_replica_moves_only_its_own_targets(
            targets in proptest::collection::vec("[a-z0-9-]{1,16}", 1..60),
            replicas in proptest::collection::btree_set("[a-z]{1,6}", 2..7),
            leaver in 0usize..7,
        ) {
            let replicas: Vec<String> = replicas.into_iter().collect();
            let leaver = replicas[leaver % replicas.len()].clone();
            let rest: Vec<String> = replicas.iter().filter(|r| **r != leaver).cloned().collect();
            for t in &targets {
                let before = owner(t, &replicas).unwrap();
                let after = owner(t, &rest).unwrap();
                if before != leaver {
                    prop_assert_eq!(before, after, "{} moved though {} did not own it", t, leaver);
                }
            }
        }

        #[test]
        fn a_joining_replica_takes_targets_only_for_itself(
            targets in proptest::collection::vec("[a-z0-9-]{1,16}", 1..60),
            replicas in proptest::collection::btree_set("[a-z]{1,6}", 1..6),
            joiner in "[A-Z]{1,6}",
        ) {
            let replicas: Vec<String> = replicas.into_iter().collect();
            let mut more = replicas.clone();
            more.push(joiner.clone());
            for t in &targets {
                let before = owner(t, &replicas).unwrap();
                let after = owner(t, &more).unwrap();
                prop_assert!(after == before || after == joiner, "{} moved to {}", t, after);
            }
        }
    }
}
