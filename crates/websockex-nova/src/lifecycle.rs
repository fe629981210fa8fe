//! The connection lifecycle (sans-IO).
//!
//! ```text
//! Connecting → Upgrading → [Authenticating → Subscribing] → Ready
//!      ↘            ↘                 ↘            ↘          ↘
//!                         Disconnected → Backoff → Connecting …
//! any state → Closing → Closed
//! ```
//!
//! [`Lifecycle`] holds the current [`State`] and the attempt number, checks every
//! transition against the diagram above and returns a [`Transition`] for the actor to
//! announce (as an [`Event`](crate::Event) and a `tracing` event). An illegal transition
//! is a bug in the actor; it is refused with an error instead of corrupting the state.
//!
//! ```
//! use websockex_nova::lifecycle::{Lifecycle, State};
//!
//! let mut lc = Lifecycle::new();
//! assert_eq!(lc.state(), State::Connecting);
//! lc.transition(State::Upgrading).unwrap();
//! lc.transition(State::Ready).unwrap();
//! assert!(lc.transition(State::Upgrading).is_err());
//! ```

use std::fmt;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Opening TCP (and TLS).
    Connecting,
    /// Performing the HTTP upgrade.
    Upgrading,
    /// Authenticating (when an auth behaviour is configured).
    Authenticating,
    /// Restoring subscriptions (when a subscription behaviour is configured).
    Subscribing,
    /// Up: messages flow, sends go straight to the socket.
    Ready,
    /// The link was lost; deciding what to do.
    Disconnected,
    /// Waiting before the next attempt.
    Backoff,
    /// Running the close handshake.
    Closing,
    /// Closed for good.
    Closed,
}

impl State {
    /// The state's name in `snake_case`, as used in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Upgrading => "upgrading",
            State::Authenticating => "authenticating",
            State::Subscribing => "subscribing",
            State::Ready => "ready",
            State::Disconnected => "disconnected",
            State::Backoff => "backoff",
            State::Closing => "closing",
            State::Closed => "closed",
        }
    }

    fn may_become(self, to: State) -> bool {
        use State::*;
        match (self, to) {
            (Closed, _) => false,
            (Closing, Closed) => true,
            (Closing, _) => false,
            (_, Closing) | (_, Closed) => true,
            (Connecting, Upgrading | Disconnected) => true,
            (Upgrading, Authenticating | Subscribing | Ready | Disconnected) => true,
            (Authenticating, Subscribing | Ready | Disconnected) => true,
            (Subscribing, Ready | Disconnected) => true,
            (Ready, Disconnected) => true,
            (Disconnected, Backoff) => true,
            (Backoff, Connecting) => true,
            _ => false,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, for the actor to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The previous state.
    pub from: State,
    /// The new state.
    pub to: State,
    /// The connect attempt this belongs to (1 for the first connect).
    pub attempt: u32,
}

/// A transition the diagram does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    /// The current state.
    pub from: State,
    /// The refused target.
    pub to: State,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "illegal lifecycle transition {} -> {}",
            self.from, self.to
        )
    }
}

impl std::error::Error for IllegalTransition {}

/// Lifecycle state and attempt counting.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: State,
    attempt: u32,
    connects: u64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A lifecycle at the start of the first attempt.
    pub fn new() -> Self {
        Lifecycle {
            state: State::Connecting,
            attempt: 1,
            connects: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current connect attempt (1-based; counts every attempt since the start).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many times the link reached `Ready`.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Moves to `to` if the diagram allows it.
    ///
    /// # Errors
    ///
    /// [`IllegalTransition`] when it does not; the state is unchanged.
    pub fn transition(&mut self, to: State) -> Result<Transition, IllegalTransition> {
        let from = self.state;
        if !from.may_become(to) {
            return Err(IllegalTransition { from, to });
        }
        if from == State::Backoff && to == State::Connecting {
            self.attempt = self.attempt.saturating_add(1);
        }
        if to == State::Ready {
            self.connects += 1;
        }
        self.state = to;
        Ok(Transition {
            from,
            to,
            attempt: self.attempt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    #[test]
    fn full_cycle_counts_attempts() {
        let mut lc = Lifecycle::new();
        for s in [
            Upgrading,
            Authenticating,
            Subscribing,
            Ready,
            Disconnected,
            Backoff,
        ] {
            lc.transition(s).unwrap();
        }
        let t = lc.transition(Connecting).unwrap();
        assert_eq!(t.attempt, 2);
        assert_eq!(lc.connects(), 1);
        lc.transition(Closing).unwrap();
        lc.transition(Closed).unwrap();
        assert!(lc.transition(Connecting).is_err());
    }

    #[test]
    fn illegal_transitions_leave_state_alone() {
        let mut lc = Lifecycle::new();
        let err = lc.transition(Ready).unwrap_err();
        assert_eq!((err.from, err.to), (Connecting, Ready));
        assert_eq!(lc.state(), Connecting);
        lc.transition(Closing).unwrap();
        assert!(lc.transition(Connecting).is_err());
    }
}
