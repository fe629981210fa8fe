//! The fault plan: kinds, targets and parameters drawn from the seed alone.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::setup::{MARKET, MIXED, REQUESTS};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Drop,
    Stall,
    Garbage,
    InvalidUtf8,
    Oversized,
    SlowClient,
    LaggingReader,
    RateLimit,
    Heartbeat,
    TokenExpiry,
    TokenRevocation,
    BookGap,
    Maintenance,
    FailingMethod,
    SlowResponses,
}

impl Kind {
    pub(super) const ALL: [Kind; 15] = [
        Kind::Drop,
        Kind::Stall,
        Kind::Garbage,
        Kind::InvalidUtf8,
        Kind::Oversized,
        Kind::SlowClient,
        Kind::LaggingReader,
        Kind::RateLimit,
        Kind::Heartbeat,
        Kind::TokenExpiry,
        Kind::TokenRevocation,
        Kind::BookGap,
        Kind::Maintenance,
        Kind::FailingMethod,
        Kind::SlowResponses,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Drop => "drop",
            Kind::Stall => "stall",
            Kind::Garbage => "garbage",
            Kind::InvalidUtf8 => "invalid_utf8",
            Kind::Oversized => "oversized",
            Kind::SlowClient => "slow_client",
            Kind::LaggingReader => "lagging_reader",
            Kind::RateLimit => "rate_limit",
            Kind::Heartbeat => "heartbeat",
            Kind::TokenExpiry => "token_expiry",
            Kind::TokenRevocation => "token_revocation",
            Kind::BookGap => "book_gap",
            Kind::Maintenance => "maintenance",
            Kind::FailingMethod => "failing_method",
            Kind::SlowResponses => "slow_responses",
        }
    }

    /// The clients it can hit (token faults and maintenance hit the whole venue).
    pub(super) fn targets(self) -> &'static [usize] {
        match self {
            Kind::SlowClient | Kind::BookGap => &[MARKET, MIXED],
            Kind::SlowResponses => &[REQUESTS, MIXED],
            Kind::TokenExpiry | Kind::TokenRevocation | Kind::Maintenance => &[REQUESTS],
            _ => &[REQUESTS, MARKET, MIXED],
        }
    }
}

/// One planned fault: its kind, the client it hits, a kind-specific parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fault {
    pub(super) kind: Kind,
    pub(super) target: usize,
    pub(super) param: u32,
}

/// The whole sequence, from the seed alone.
pub(super) fn plan(seed: u64, n: u64) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n as usize);
    let mut bag: Vec<Kind> = Vec::new();
    while (out.len() as u64) < n {
        if bag.is_empty() {
            bag = Kind::ALL.to_vec();
            bag.shuffle(&mut rng);
        }
        let kind = bag.pop().expect("refilled");
        let targets = kind.targets();
        let target = targets[rng.random_range(0..targets.len())];
        let param = rng.random_range(0..1_000_000);
        out.push(Fault {
            kind,
            target,
            param,
        });
    }
    out
}

/// FNV-1a over the plan: two runs injected the same sequence iff this matches.
pub(super) fn fingerprint(plan: &[Fault]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in plan {
        for b in format!("{}:{}:{};", f.kind.name(), f.target, f.param).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_the_seed_and_holds_every_kind_per_round() {
        let a = plan(7, 60);
        assert_eq!(a, plan(7, 60));
        assert_ne!(fingerprint(&a), fingerprint(&plan(8, 60)));
        for round in a.chunks(Kind::ALL.len()) {
            let mut kinds: Vec<Kind> = round.iter().map(|f| f.kind).collect();
            kinds.sort();
            assert_eq!(kinds, Kind::ALL.to_vec());
        }
        assert!(a.iter().all(|f| f.kind.targets().contains(&f.target)));
        // A longer plan starts with the shorter one.
        assert_eq!(&plan(7, 100)[..60], &a[..]);
    }
}
