//! Small pieces the broker backends share: the in-flight slot a delivery holds until it is
//! settled, the wall clock deferrals are stamped with, and header-safe text.

use crate::QueueError;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedSemaphorePermit;

/// One unit of a consumer's `max_in_flight`, held by a delivery until it is settled or dropped.
pub(crate) struct Slot(Mutex<Option<OwnedSemaphorePermit>>);

impl Slot {
    pub(crate) fn new(permit: OwnedSemaphorePermit) -> Self {
        Slot(Mutex::new(Some(permit)))
    }

    /// Claims the right to settle; an error if the delivery was settled already. The slot is
    /// freed when the returned permit is dropped, after the settlement ran, succeeded or not:
    /// a failed settlement leaves the message to the broker's redelivery either way.
    pub(crate) fn claim(&self, backend: &'static str) -> Result<OwnedSemaphorePermit, QueueError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| QueueError::backend(backend, "delivery already settled"))
    }

    /// Whether the delivery is still unsettled (for a drop handler).
    pub(crate) fn release_on_drop(&mut self) -> Option<OwnedSemaphorePermit> {
        self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Milliseconds since the Unix epoch, the unit of the not-before headers.
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wait left until `not_before` (Unix ms), if it is still in the future.
pub(crate) fn remaining(not_before: u64) -> Option<Duration> {
    let now = unix_ms_now();
    (not_before > now).then(|| Duration::from_millis(not_before - now))
}

/// `text` as a single-line header value: control characters become spaces and it is cut to
/// 1 KiB (on a character boundary), so a long error message cannot break the header block.
pub(crate) fn header_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 1024 {
        let mut cut = 1024;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb"), "a  b");
        let long = "é".repeat(2000);
        let cut = header_text(&long);
        assert!(cut.len() <= 1024 && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn remaining_is_none_once_the_time_has_passed() {
        assert!(remaining(unix_ms_now() - 1).is_none());
        let left = remaining(unix_ms_now() + 60_000).unwrap_or_default();
        assert!(left > Duration::from_secs(59));
    }
}
