//! Stages that read one topic and write another.

pub mod enrich;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a stage keeps draining its input after it is told to stop.
pub const DRAIN_GRACE: Duration = Duration::from_secs(20);

/// The stop rule every stage loop follows: once `token` is cancelled, keep
/// going while the input still has records (the stage upstream has stopped
/// first, so the input is finite), for at most [`DRAIN_GRACE`]; what is left
/// after that stays in the log for the next start.
#[derive(Debug)]
pub struct Drain {
    token: CancellationToken,
    deadline: Option<Instant>,
}

impl Drain {
    /// Follows `token`.
    pub fn new(token: CancellationToken) -> Self {
        Self { token, deadline: None }
    }

    /// Whether the loop should end, after a pass that found input (`busy`)
    /// or none.
    pub fn should_stop(&mut self, busy: bool) -> bool {
        if !self.token.is_cancelled() {
            return false;
        }
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
        !busy || Instant::now() >= deadline
    }
}
