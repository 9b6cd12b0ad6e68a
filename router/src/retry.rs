//! The retry rule: what a failed provider call means for the job, as a pure function of the
//! error's class, the job's attempts and a jitter draw. The worker and the market bench both
//! follow it; the capacity side of the same answer is [`crate::Router::record`].

use std::time::Duration;

/// Whose fault a failed provider call is (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 429: the provider wants us to slow down; retry or defer, honouring `retry_after`.
    RateLimited,
    /// 5xx, 529, timeouts, connection errors, unreadable bodies: retry with backoff.
    Transient,
    /// 400-class request errors: the job itself is bad; fail it.
    Terminal,
    /// 401/403/404-model, 402 and out-of-credit answers: the provider account is unusable;
    /// open its circuit for minutes and route elsewhere.
    ProviderFault,
}

impl ErrorClass {
    /// The snake_case name used in result rows and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Transient => "transient",
            ErrorClass::Terminal => "terminal",
            ErrorClass::ProviderFault => "provider_fault",
        }
    }

    /// Whether a call that failed this way counts as one of the job's attempts.
    pub fn counts_as_attempt(self) -> bool {
        !matches!(self, ErrorClass::RateLimited)
    }
}

/// What to do with a job after a failed call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retry {
    /// Route it again at once: the capacity plan now knows why the call failed (a 429 blocks the
    /// provider for its `Retry-After`; a provider fault leaves the provider out).
    Reroute,
    /// Wait this long (exponential backoff with jitter), then route it again.
    Backoff(Duration),
    /// Give up: the job ends as a `failed` row of this kind.
    GiveUp(GiveUp),
}

/// Why a job is given up after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The request itself is bad (400-class): no provider will take it.
    Terminal,
    /// The job used its `max_attempts` (the error's class is kept for the row).
    Exhausted(ErrorClass),
}

/// The retry rule. `attempts` is the job's failed attempts *including* this call when it
/// counts ([`ErrorClass::counts_as_attempt`]); `jitter01` is a draw in `[0, 1)`.
pub fn after_error(class: ErrorClass, attempts: u32, max_attempts: u32, jitter01: f64) -> Retry {
    match class {
        ErrorClass::RateLimited => Retry::Reroute,
        ErrorClass::Terminal => Retry::GiveUp(GiveUp::Terminal),
        _ if attempts >= max_attempts => Retry::GiveUp(GiveUp::Exhausted(class)),
        ErrorClass::ProviderFault => Retry::Reroute,
        ErrorClass::Transient => Retry::Backoff(backoff(attempts, jitter01)),
    }
}

/// Exponential backoff with jitter for the `attempt`-th failure: 1 s, 2 s, 4 s… capped at
/// 5 minutes, scaled by a factor in [0.5, 1) drawn from `jitter01` ∈ [0, 1).
pub fn backoff(attempt: u32, jitter01: f64) -> Duration {
    let base = 2f64
        .powi(attempt.saturating_sub(1).min(16) as i32)
        .min(300.0);
    Duration::from_secs_f64(base * (0.5 + 0.5 * jitter01.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_reroute_without_using_an_attempt() {
        assert!(!ErrorClass::RateLimited.counts_as_attempt());
        assert_eq!(
            after_error(ErrorClass::RateLimited, 99, 8, 0.5),
            Retry::Reroute
        );
    }

    #[test]
    fn request_errors_give_up_at_once_and_faults_reroute() {
        assert_eq!(
            after_error(ErrorClass::Terminal, 1, 8, 0.5),
            Retry::GiveUp(GiveUp::Terminal)
        );
        assert_eq!(
            after_error(ErrorClass::ProviderFault, 1, 8, 0.5),
            Retry::Reroute
        );
    }

    #[test]
    fn transient_errors_back_off_until_the_attempts_are_used() {
        assert_eq!(
            after_error(ErrorClass::Transient, 3, 8, 0.0),
            Retry::Backoff(Duration::from_secs(2))
        );
        assert_eq!(
            after_error(ErrorClass::Transient, 8, 8, 0.0),
            Retry::GiveUp(GiveUp::Exhausted(ErrorClass::Transient))
        );
        assert_eq!(
            after_error(ErrorClass::ProviderFault, 8, 8, 0.0),
            Retry::GiveUp(GiveUp::Exhausted(ErrorClass::ProviderFault))
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, 0.999_999).as_millis(), 1999);
        assert!(backoff(40, 0.999) <= Duration::from_secs(300));
    }
}
