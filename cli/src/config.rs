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
}
