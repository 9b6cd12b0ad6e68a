//! Choosing a broker backend from a URL, and the naming every backend derives its topology from.
//!
//! `offpeak submit` and `offpeak worker` only know a URL and a namespace; this module turns them
//! into a connected [`Queue`], so no other crate matches on backend names.

use crate::nats::{NatsOptions, NatsQueue};
use crate::rabbit::{RabbitOptions, RabbitQueue};
use crate::{Queue, QueueError};
use std::sync::Arc;
use std::time::Duration;

/// What a broker backend needs besides its URL: the names it declares and the few knobs of its
/// topology. The defaults give DESIGN §3's names.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Prefix of every name the backend declares, so fleets (and tests) sharing a broker never
    /// share a queue: 1–64 ASCII letters, digits, `-` or `_`. With `offpeak` (the default):
    /// NATS stream `OFFPEAK_JOBS` on subjects `offpeak.jobs.<run_id>`, durable consumer
    /// `offpeak-workers`, dead letters in stream `OFFPEAK_DLQ` on `offpeak.dlq.<run_id>`;
    /// RabbitMQ queues `offpeak.jobs`, `offpeak.dlq` and `offpeak.delay.<tier>`.
    pub namespace: String,
    /// NATS: how long the streams remember a de-duplication id; a re-submission of the same job
    /// inside this window is not enqueued twice. RabbitMQ has no broker-side de-duplication.
    pub dedup_window: Duration,
    /// NATS: most messages the shared consumer keeps delivered but unsettled — in flight at
    /// workers *and* waiting out a deferral, so it must be far above the fleet's in-flight
    /// total. Raised to at least 4 × `max_in_flight` at [`Queue::consume`]; `-1` means no cap.
    pub max_ack_pending: i64,
    /// RabbitMQ: the delay queues' TTLs. A deferral goes to the longest tier not above its
    /// delay (or the shortest), and longer delays are reached by hops, so the shortest tier is
    /// the precision of a deferral.
    pub delay_tiers: Vec<Duration>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            namespace: "offpeak".into(),
            dedup_window: Duration::from_secs(10 * 60),
            max_ack_pending: 1_000_000,
            delay_tiers: [1, 5, 30, 120, 600, 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

impl BrokerOptions {
    /// Options with the default knobs and names under `namespace`.
    pub fn with_namespace(namespace: impl Into<String>) -> Self {
        BrokerOptions {
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    /// Checks the namespace: it becomes part of stream, subject and queue names.
    pub fn validate(&self) -> Result<(), QueueError> {
        let ns = &self.namespace;
        let ok = !ns.is_empty()
            && ns.len() <= 64
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(QueueError::backend(
                "broker",
                format!("invalid namespace {ns:?}: use 1-64 ASCII letters, digits, '-' or '_'"),
            ))
        }
    }
}

/// Connects to the broker named by `url`'s scheme — `nats://` or `tls://` for NATS JetStream,
/// `amqp://` or `amqps://` for RabbitMQ — and declares its topology (idempotently) under
/// `opts.namespace`.
pub async fn connect(url: &str, opts: BrokerOptions) -> Result<Arc<dyn Queue>, QueueError> {
    opts.validate()?;
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "nats" | "tls" => {
            let q = NatsQueue::connect(NatsOptions::from_broker(url, &opts)).await?;
            Ok(Arc::new(q))
        }
        "amqp" | "amqps" => {
            let q = RabbitQueue::connect(RabbitOptions::from_broker(url, &opts)).await?;
            Ok(Arc::new(q))
        }
        _ => Err(QueueError::backend(
            "broker",
            format!(
                "unsupported broker URL scheme {scheme:?} in {}: use nats://, tls://, amqp:// or amqps://",
                redact(url)
            ),
        )),
    }
}

/// Whether the broker named by `url` drops a second publish of a message id by itself (NATS
/// JetStream, within `broker.dedup_window_s`); RabbitMQ does not.
pub fn deduplicates(url: &str) -> bool {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(scheme.as_str(), "nats" | "tls")
}

/// `url` without its user-info, fit for error messages and logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_credentials_but_keeps_host_and_path() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn namespace_must_be_a_safe_name_token() {
        assert!(BrokerOptions::with_namespace("t-1_a").validate().is_ok());
        assert!(BrokerOptions::with_namespace("a.b").validate().is_err());
        assert!(BrokerOptions::with_namespace("").validate().is_err());
    }

    #[tokio::test]
    async fn unknown_scheme_is_refused_without_echoing_credentials() {
        let err = connect("redis://u:secret@h:1", BrokerOptions::default())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unsupported"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
