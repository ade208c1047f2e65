//! One router's view of the IPAM ring, with the operations of `weave:ipam/ring/ring.go`
//! (`ClaimForPeers`/`subdivide`, `GrantRangeToHost`, `Transfer`, `Merge`, `ReportFree`) and the
//! donation rule of `weave:ipam/space/space.go` (`Donate`).

use std::collections::{BTreeMap, BTreeSet};

use crate::PeerName;

/// One ring entry: the range from `token` to the next token belongs to `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub peer: PeerName,
    pub version: u64,
    pub free: u64,
}

/// A ring view over `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ring {
    pub start: u64,
    pub end: u64,
    pub entries: BTreeMap<u64, Entry>,
}

impl Ring {
    pub fn new(start: u64, end: u64) -> Self {
        Ring {
            start,
            end,
            entries: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token after `token` (wrapping to the first), as the end of `token`'s range.
    fn next_token(&self, token: u64) -> u64 {
        self.entries
            .range(token + 1..)
            .next()
            .map(|(t, _)| *t)
            .unwrap_or_else(|| self.entries.keys().next().copied().unwrap_or(self.start))
    }

    fn distance(&self, from: u64, to: u64) -> u64 {
        if to > from {
            to - from
        } else {
            (self.end - from) + (to - self.start)
        }
    }

    /// `(token, size, entry)` for every entry in token order (sizes never wrap here because
    /// `subdivide` always puts a token at `start`).
    pub fn ranges(&self) -> Vec<(u64, u64, Entry)> {
        self.entries
            .iter()
            .map(|(t, e)| (*t, self.distance(*t, self.next_token(*t)), e.clone()))
            .collect()
    }

    pub fn owned_ranges(&self, peer: PeerName) -> Vec<(u64, u64)> {
        self.ranges()
            .into_iter()
            .filter(|(_, _, e)| e.peer == peer)
            .map(|(t, s, _)| (t, t + s))
            .collect()
    }

    pub fn owned_by(&self, peer: PeerName) -> u64 {
        self.owned_ranges(peer).iter().map(|(a, b)| b - a).sum()
    }

    /// `ClaimForPeers`: divides the whole range among `peers` (sorted, deduplicated) into
    /// CIDR-aligned, roughly equal shares.
    pub fn claim_for_peers(&mut self, peers: &[PeerName]) {
        let mut peers = peers.to_vec();
        peers.sort();
        peers.dedup();
        let (s, e) = (self.start, self.end);
        self.subdivide(s, e, &peers);
    }

    fn subdivide(&mut self, from: u64, to: u64, peers: &[PeerName]) {
        let share = to - from;
        if share == 0 || peers.is_empty() {
            return;
        }
        if share == 1 || peers.len() == 1 {
            self.entries.insert(
                from,
                Entry {
                    peer: peers[0],
                    version: 0,
                    free: share,
                },
            );
            return;
        }
        let mid = from + share / 2;
        let half = peers.len() / 2;
        self.subdivide(from, mid, &peers[..half]);
        self.subdivide(mid + share % 2, to, &peers[half..]);
    }

    /// `GrantRangeToHost`: `me` gives `[start, end)` (which it owns) to `to`.
    pub fn grant(&mut self, me: PeerName, start: u64, end: u64, to: PeerName) {
        let preceding = self
            .entries
            .range(..=start)
            .next_back()
            .map(|(t, _)| *t)
            .unwrap_or(start);
        let next_after_start = self.next_token(start);
        let start_free = self.distance(start, next_after_start).min(end - start);
        if preceding == start {
            if let Some(e) = self.entries.get_mut(&start) {
                e.peer = to;
                e.free = start_free;
                e.version += 1;
            }
        } else {
            let prev_free = self.distance(preceding, start);
            if let Some(prev) = self.entries.get_mut(&preceding) {
                prev.peer = me;
                prev.free = prev_free;
                prev.version += 1;
            }
            self.entries.insert(
                start,
                Entry {
                    peer: to,
                    version: 0,
                    free: start_free,
                },
            );
        }
        let intervening: Vec<u64> = self
            .entries
            .range(start + 1..end)
            .map(|(t, _)| *t)
            .collect();
        for t in intervening {
            let d = self.distance(t, end);
            if let Some(e) = self.entries.get_mut(&t) {
                e.peer = to;
                e.free = e.free.min(d);
                e.version += 1;
            }
        }
        let end_token = if end == self.end { self.start } else { end };
        if !self.entries.contains_key(&end_token) {
            let next = self.next_token(end_token);
            let end_free = self.distance(end_token, next);
            self.entries.insert(
                end_token,
                Entry {
                    peer: me,
                    version: 0,
                    free: end_free,
                },
            );
        }
    }

    /// `Transfer`: every entry of `from` now belongs to `to`, version + 100. Returns how many
    /// addresses moved.
    pub fn transfer(&mut self, from: PeerName, to: PeerName) -> u64 {
        let moved = self.owned_by(from);
        for e in self.entries.values_mut() {
            if e.peer == from {
                e.peer = to;
                e.version += 100;
            }
        }
        moved
    }

    /// `ReportFree` for `me`: sets each owned entry's free count from the allocations,
    /// bumping the version of entries whose count changed.
    pub fn report_free(&mut self, me: PeerName, allocated: &BTreeSet<u64>) {
        for (t, s, e) in self.ranges() {
            if e.peer != me {
                continue;
            }
            let used = allocated.range(t..t + s).count() as u64;
            let free = s - used;
            if let Some(entry) = self.entries.get_mut(&t) {
                if entry.free != free {
                    entry.free = free;
                    entry.version += 1;
                }
            }
        }
    }

    /// `Merge` of an incoming view into this one (owned by `me`), with the conflict rules of
    /// `entries.merge`. `has_alloc(a, b)` says whether `me` has allocations in `[a, b)`.
    /// Returns `Err` (and leaves `self` unchanged) when weave would drop the connection.
    pub fn merge(
        &mut self,
        theirs: &Ring,
        me: PeerName,
        has_alloc: &dyn Fn(u64, u64) -> bool,
    ) -> Result<bool, String> {
        if theirs.start != self.start || theirs.end != self.end {
            return Err("Incompatible IP allocation ranges".into());
        }
        let mut result = self.entries.clone();
        let mut updated = false;
        for (t, th) in &theirs.entries {
            match self.entries.get(t) {
                None => {
                    // A new token: refuse if it splits a range we own and use.
                    if let Some((pt, pe)) = self.entries.range(..*t).next_back() {
                        if pe.peer == me && th.peer != me {
                            let nt = self.next_token(*pt);
                            let end = if nt > *t { nt } else { self.end };
                            if has_alloc(*t, end) {
                                return Err(format!(
                                    "Peer {} says it owns the IP range from {}, which I think I own",
                                    th.peer,
                                    fmt_ip(*t)
                                ));
                            }
                        }
                    }
                    result.insert(*t, th.clone());
                    updated = true;
                }
                Some(mine) => {
                    let range_end = {
                        let nt = self.next_token(*t);
                        if nt > *t {
                            nt
                        } else {
                            self.end
                        }
                    };
                    if mine.version > th.version || mine == th {
                        continue;
                    }
                    if mine.version == th.version {
                        if mine.peer == me && has_alloc(*t, range_end) {
                            return Err(format!(
                                "Inconsistent entries for {}: owned by {} but incoming message says {}",
                                fmt_ip(*t),
                                mine.peer,
                                th.peer
                            ));
                        }
                        if th.free > mine.free {
                            result.insert(*t, th.clone());
                            updated = true;
                        }
                        continue;
                    }
                    // Theirs is newer.
                    if mine.peer == me && th.peer != me && has_alloc(*t, range_end) {
                        return Err(format!(
                            "Received update for IP range I own at {} v{}: incoming message says owner {} v{}",
                            fmt_ip(*t),
                            mine.version,
                            th.peer,
                            th.version
                        ));
                    }
                    result.insert(*t, th.clone());
                    updated = true;
                }
            }
        }
        self.entries = result;
        Ok(updated)
    }
}

/// The free chunks (`[a, b)`) of the space `me` owns in `ring`, given its allocations.
pub(crate) fn free_chunks(ring: &Ring, me: PeerName, allocated: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (a, b) in ring.owned_ranges(me) {
        let mut cur = a;
        for &x in allocated.range(a..b) {
            if x > cur {
                out.push((cur, x));
            }
            cur = x + 1;
        }
        if cur < b {
            out.push((cur, b));
        }
    }
    out
}

/// The biggest CIDR-aligned block inside `[a, b)`.
fn biggest_cidr(a: u64, b: u64) -> (u64, u64) {
    let mut best = (a, a);
    let mut size = 1u64 << 32;
    while size >= 1 {
        let first = a.div_ceil(size) * size;
        if first + size <= b {
            best = (first, first + size);
            break;
        }
        size /= 2;
    }
    best
}

/// `Space.Donate`: the biggest CIDR-aligned free block (later chunks win ties); when it is
/// more than half the free space, its upper half.
pub(crate) fn donation(chunks: &[(u64, u64)]) -> Option<(u64, u64)> {
    let total: u64 = chunks.iter().map(|(a, b)| b - a).sum();
    let mut biggest: Option<(u64, u64)> = None;
    for &(a, b) in chunks {
        let c = biggest_cidr(a, b);
        if c.1 > c.0 && biggest.is_none_or(|(x, y)| c.1 - c.0 >= y - x) {
            biggest = Some(c);
        }
    }
    let (mut s, e) = biggest?;
    if e - s > total / 2 {
        s += (e - s) / 2;
    }
    Some((s, e))
}

/// Dotted-quad form of an address.
pub(crate) fn fmt_ip(a: u64) -> String {
    format!(
        "{}.{}.{}.{}",
        (a >> 24) & 255,
        (a >> 16) & 255,
        (a >> 8) & 255,
        a & 255
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> PeerName {
        PeerName::from_u64(n).unwrap()
    }

    const START: u64 = 10 << 24 | 32 << 16;
    const END: u64 = START + (1 << 20);

    #[test]
    fn subdivide_and_grants_reproduce_the_fixture_ring() {
        let mut r = Ring::new(START, END);
        r.claim_for_peers(&[p(3), p(2)]);
        assert_eq!(r.owned_by(p(2)), 524288);
        // fixed2 donates to dyn4.
        let d = donation(&free_chunks(&r, p(2), &BTreeSet::new())).unwrap();
        assert_eq!((fmt_ip(d.0), d.1 - d.0), ("10.36.0.0".to_string(), 262144));
        r.grant(p(2), d.0, d.1, p(4));
        assert_eq!(r.entries[&START].version, 1);
        assert_eq!(r.entries[&d.0].version, 0);
        // dyn4 uses one address, then donates to fixed1.
        let used: BTreeSet<u64> = [d.0].into();
        let d2 = donation(&free_chunks(&r, p(4), &used)).unwrap();
        assert_eq!(
            (fmt_ip(d2.0), d2.1 - d2.0),
            ("10.39.0.0".to_string(), 65536)
        );
    }

    #[test]
    fn transfer_bumps_by_100() {
        let mut r = Ring::new(START, END);
        r.claim_for_peers(&[p(1), p(2)]);
        assert_eq!(r.transfer(p(2), p(1)), 524288);
        assert_eq!(r.owned_by(p(1)), 1 << 20);
        assert_eq!(r.entries.values().map(|e| e.version).max(), Some(100));
        assert_eq!(r.transfer(p(2), p(1)), 0);
    }
}
