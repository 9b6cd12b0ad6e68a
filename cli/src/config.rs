//! Configuration: a TOML file plus `OFFPEAK_<SECTION>__<KEY>` environment overrides, into serde
//! structs whose defaults live with the structs themselves.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::Path;
use worker::WorkerConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Worker settings: concurrency, attempts, timeouts, policy, breaker, flushing.
    pub worker: WorkerConfig,
    /// Broker topology: names and knobs (the URL is `--broker`).
    pub broker: BrokerConfig,
}

/// The `[broker]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Prefix of every stream, subject and queue name, so fleets sharing a broker stay apart.
    pub namespace: String,
    /// NATS: de-duplication window of the jobs stream (seconds).
    pub dedup_window_s: f64,
    /// NATS: most messages delivered but unsettled across the fleet (deferred ones included).
    pub max_ack_pending: i64,
    /// RabbitMQ: TTLs of the delay queues used for deferral (seconds).
    pub delay_tiers_s: Vec<f64>,
    /// A file holding the fleet's message-signing key (e.g. a mounted secret; its trimmed
    /// contents, at least 16 bytes). `OFFPEAK_SIGNING_KEY` wins when both are set. With a key,
    /// producers sign every message and workers dead-letter any message not signed with it.
    pub signing_key_file: Option<std::path::PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let d = queue::BrokerOptions::default();
        BrokerConfig {
            namespace: d.namespace,
            dedup_window_s: d.dedup_window.as_secs_f64(),
            max_ack_pending: d.max_ack_pending,
            delay_tiers_s: d.delay_tiers.iter().map(|t| t.as_secs_f64()).collect(),
            signing_key_file: None,
        }
    }
}

impl Config {
    /// The broker options this configuration asks for.
    pub fn broker_options(&self) -> queue::BrokerOptions {
        let b = &self.broker;
        queue::BrokerOptions {
            namespace: b.namespace.clone(),
            dedup_window: std::time::Duration::from_secs_f64(b.dedup_window_s.max(0.0)),
            max_ack_pending: b.max_ack_pending,
            delay_tiers: b
                .delay_tiers_s
                .iter()
                .map(|s| std::time::Duration::from_secs_f64(s.max(0.001)))
                .collect(),
        }
    }
}

/// The environment variable holding the fleet's message-signing key.
pub const SIGNING_KEY_ENV: &str = "OFFPEAK_SIGNING_KEY";

impl Config {
    /// The fleet's message-signing key: `OFFPEAK_SIGNING_KEY` when set and not empty, else the
    /// contents of `broker.signing_key_file`, else none (messages are neither signed nor
    /// checked). Errors name the source, never the key.
    pub fn signing_key(&self) -> anyhow::Result<Option<schemas::SigningKey>> {
        if let Some(v) = std::env::var_os(SIGNING_KEY_ENV).filter(|v| !v.is_empty()) {
            let text = v
                .into_string()
                .map_err(|_| anyhow::anyhow!("{SIGNING_KEY_ENV} is not valid UTF-8"))?;
            return schemas::SigningKey::new(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{SIGNING_KEY_ENV}: {e}"));
        }
        let Some(path) = &self.broker.signing_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading broker.signing_key_file {}", path.display()))?;
        schemas::SigningKey::new(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("broker.signing_key_file {}: {e}", path.display()))
    }
}

impl Config {
    /// Checks every value against its range, naming the key at fault (exit code 2). Commands
    /// call it after applying their own overrides (`--concurrency`).
    pub fn validate(&self) -> anyhow::Result<()> {
        self.worker.validate()?;
        let b = &self.broker;
        if !(b.dedup_window_s.is_finite() && b.dedup_window_s >= 0.0) {
            bail!(
                "invalid configuration: broker.dedup_window_s must be a finite number 0 or more, got {}",
                b.dedup_window_s
            );
        }
        if b.max_ack_pending < 1 {
            bail!(
                "invalid configuration: broker.max_ack_pending must be at least 1, got {}",
                b.max_ack_pending
            );
        }
        if b.delay_tiers_s.is_empty() {
            bail!("invalid configuration: broker.delay_tiers_s must list at least one delay");
        }
        if let Some(t) = b
            .delay_tiers_s
            .iter()
            .find(|t| !(t.is_finite() && **t > 0.0))
        {
            bail!(
                "invalid configuration: broker.delay_tiers_s must hold finite numbers above 0, got {t}"
            );
        }
        Ok(())
    }
}

impl Config {
    /// Reads `path` (if any), then applies environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("config {}", p.display()))?
            }
            None => toml::Table::new(),
        };
        for (k, v) in std::env::vars() {
            if let Some(rest) = k.strip_prefix("OFFPEAK_") {
                if rest.contains("__") {
                    apply_override(&mut table, rest, &v)
                        .with_context(|| format!("environment variable {k}"))?;
                }
            }
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("configuration")?;
        Ok(cfg)
    }
}

/// Sets `WORKER__POLICY__SAFETY_MARGIN_S=1` as `worker.policy.safety_margin_s = 1`; the value is
/// read as TOML (numbers, booleans) and falls back to a string.
fn apply_override(table: &mut toml::Table, key: &str, value: &str) -> anyhow::Result<()> {
    let path: Vec<String> = key.split("__").map(str::to_lowercase).collect();
    let Some((last, parents)) = path.split_last() else {
        bail!("empty key")
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(next) = entry.as_table_mut() else {
            bail!("{p} is not a table")
        };
        t = next;
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut x| x.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    t.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_style_override_sets_nested_numbers_and_strings() {
        let mut t = toml::Table::new();
        apply_override(&mut t, "WORKER__POLICY__SAFETY_MARGIN_S", "1.5").unwrap();
        apply_override(&mut t, "WORKER__CONCURRENCY", "7").unwrap();
        let cfg: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(cfg.worker.policy.safety_margin_s, 1.5);
        assert_eq!(cfg.worker.concurrency, 7);
    }

    #[test]
    fn signing_key_file_is_read_trimmed_and_a_short_key_is_refused_without_showing_it() {
        if std::env::var_os(SIGNING_KEY_ENV).is_some() {
            return; // the variable wins over the file; this test is about the file
        }
        let dir = std::env::temp_dir().join(format!("offpeak-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        let mut cfg = Config::default();
        assert!(cfg.signing_key().unwrap().is_none());
        cfg.broker.signing_key_file = Some(file.clone());
        std::fs::write(&file, "tiny-secret\n").unwrap();
        let e = format!("{:#}", cfg.signing_key().unwrap_err());
        assert!(
            e.contains("at least 16 bytes") && e.contains("signing_key_file"),
            "{e}"
        );
        assert!(!e.contains("tiny-secret"), "{e}");
        std::fs::write(&file, "a-long-enough-fleet-secret\n").unwrap();
        let key = cfg.signing_key().unwrap().unwrap();
        let plain = schemas::SigningKey::new("a-long-enough-fleet-secret").unwrap();
        assert_eq!(key.verify(&plain.sign(br#"{"a":1}"#.to_vec())), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
