//! Configuration files (feature `config-file`): a TOML form of the live-changeable part of
//! [`ClientConfig`], applied to a running connection by [`ConfigWatcher`] whenever the file
//! changes, and written back with [`ConfigFile::from_config`] + [`ConfigFile::save`].
//!
//! Every key is optional: a file says only what it changes. Durations are written the
//! human way (`"250ms"`, `"30s"`, `"2m"`); `"off"` turns pings, the traffic timeout or the
//! rate limit off. Unknown keys are errors (a typo must not pass silently). Headers are not
//! in the file: they often carry credentials; set them in code.
//!
//! ```
//! use websockex_nova::config_file::ConfigFile;
//! use websockex_nova::ClientConfig;
//!
//! let file = ConfigFile::parse(r#"
//!     request_timeout = "5s"
//!     [rate_limit]
//!     burst = 20
//!     per_second = 10.0
//!     on_limit = "reject"
//!     [reconnect]
//!     strategy = "exponential"
//!     initial = "100ms"
//!     max_delay = "10s"
//! "#)?;
//! let mut config = ClientConfig::new("wss://example.com/ws");
//! file.apply(&mut config);
//! assert_eq!(config.rate_limit.unwrap().burst, 20);
//! # Ok::<(), websockex_nova::Error>(())
//! ```
//!
//! Which changes apply at once and which on the next connect: [`crate::reconfigure`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::{mpsc, Notify};

use crate::config::{ClientConfig, OfflinePolicy, OverflowPolicy};
use crate::error::Error;
use crate::keepalive::KeepaliveConfig;
use crate::ratelimit::{OnLimit, RateLimit};
use crate::reconfigure::Reconfigured;
use crate::reconnect::{Jitter, ReconnectPolicy, Strategy};
use crate::Client;

/// A duration as text (`"250ms"`), or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Option<Duration>);

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_str("off"),
            Some(d) => s.serialize_str(&humantime::format_duration(d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(Span(None));
        }
        humantime::parse_duration(&text)
            .map(|d| Span(Some(d)))
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration ({e})")))
    }
}

fn on(d: Duration) -> Span {
    Span(Some(d))
}

/// How delays between reconnect attempts grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    /// `initial`, `initial + step`, …
    Linear,
    /// `initial · factorⁿ`.
    Exponential,
    /// Exponential with full jitter.
    Jittered,
    /// Decorrelated jitter.
    Decorrelated,
    /// No reconnects.
    Never,
}

/// `[reconnect]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectSection {
    /// The strategy.
    pub strategy: StrategyName,
    /// First delay (default 250 ms).
    pub initial: Option<Span>,
    /// Added per attempt (linear; default = `initial`).
    pub step: Option<Span>,
    /// Growth per attempt (exponential, jittered; default 2).
    pub factor: Option<f64>,
    /// Largest delay (default 30 s).
    pub max_delay: Option<Span>,
    /// Give up after this many failed attempts (absent: never).
    pub max_retries: Option<u32>,
    /// Uptime after which the attempt count resets (default 30 s).
    pub reset_after: Option<Span>,
}

/// `[rate_limit]`, or `rate_limit = "off"`.
#[derive(Debug, Clone, PartialEq)]
pub enum RateLimitSection {
    /// `"off"`: no limit.
    Off,
    /// A token bucket.
    On(RateLimitTable),
}

/// The `[rate_limit]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitTable {
    /// Credits available at once.
    pub burst: u32,
    /// Credits refilled per second.
    pub per_second: f64,
    /// Longest wait for credits (`"off"`: no limit; absent: 10 s).
    pub max_wait: Option<Span>,
    /// `"queue"` (default) or `"reject"`.
    pub on_limit: Option<OnLimitName>,
}

impl Serialize for RateLimitSection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RateLimitSection::Off => s.serialize_str("off"),
            RateLimitSection::On(t) => t.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RateLimitSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RateLimitSection;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [rate_limit] table or \"off\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "off" => Ok(RateLimitSection::Off),
                    other => Err(E::custom(format!(
                        "rate_limit must be a table or \"off\", not {other:?}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RateLimitTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RateLimitSection::On)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// What happens when credits run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimitName {
    /// Wait for credits.
    Queue,
    /// Fail at once.
    Reject,
}

/// `[keepalive]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveSection {
    /// Ping interval, or `"off"`.
    pub ping_interval: Option<Span>,
    /// Dead-peer timeout, or `"off"`.
    pub timeout: Option<Span>,
}

/// `[timeouts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    /// TCP + TLS (next connect).
    pub connect: Option<Span>,
    /// HTTP upgrade (next connect).
    pub upgrade: Option<Span>,
    /// One socket write.
    pub write: Option<Span>,
    /// The close handshake.
    pub close: Option<Span>,
    /// Default request timeout.
    pub request: Option<Span>,
}

/// `[offline]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSection {
    /// `"queue"` or `"reject"`.
    pub policy: OnLimitName,
    /// The queue's bound (with `"queue"`; default 1,024).
    pub capacity: Option<usize>,
}

/// Full event or subscription streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowName {
    /// Wait for room (TCP pushes back).
    Block,
    /// Drop the newest, count and announce.
    DropNewest,
    /// Drop the oldest, count and announce (choose it at build).
    DropOldest,
    /// Replace the link.
    Disconnect,
}

/// The TOML configuration file. Every field is optional: absent means "leave as it is".
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConfigFile {
    /// `ws://` or `wss://` URL (next connect).
    pub url: Option<String>,
    /// Subprotocols offered (next connect).
    pub subprotocols: Option<Vec<String>>,
    /// Default request timeout (shorthand for `[timeouts] request`).
    pub request_timeout: Option<Span>,
    /// Most requests in flight.
    pub max_in_flight: Option<usize>,
    /// Capacity of new subscriptions' streams.
    pub subscription_capacity: Option<usize>,
    /// Largest inbound message (next connect).
    pub max_message_size: Option<usize>,
    /// Under `overflow = "block"`, the longest wait for the consumer before the link is
    /// replaced (`"off"`: for ever).
    pub max_block: Option<Span>,
    /// Full streams.
    pub overflow: Option<OverflowName>,
    /// `[timeouts]`.
    pub timeouts: Option<TimeoutsSection>,
    /// `[keepalive]`.
    pub keepalive: Option<KeepaliveSection>,
    /// `[reconnect]`.
    pub reconnect: Option<ReconnectSection>,
    /// `[rate_limit]`.
    pub rate_limit: Option<RateLimitSection>,
    /// `[offline]`.
    pub offline: Option<OfflineSection>,
}

impl std::fmt::Debug for ConfigFile {
    /// The TOML text, with the URL's query and user-info redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.clone();
        if let Some(url) = &mut shown.url {
            *url = crate::logging::redact_url(url).into_owned();
        }
        match shown.to_toml() {
            Ok(text) => write!(f, "ConfigFile {{\n{text}}}"),
            Err(_) => f.write_str("ConfigFile { .. }"),
        }
    }
}

impl ConfigFile {
    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// `ErrorKind::Config` with the line, column and the reason (unknown key, bad value).
    pub fn parse(text: &str) -> Result<ConfigFile, Error> {
        Self::parse_from(text, "config file")
    }

    fn parse_from(text: &str, origin: &str) -> Result<ConfigFile, Error> {
        toml::from_str(text).map_err(|e| Error::config(format!("{origin}: {e}")))
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    ///
    /// `ErrorKind::Config` naming the file, for I/O and parse errors.
    pub fn load(path: impl AsRef<Path>) -> Result<ConfigFile, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}", path.display())).with_source(e))?;
        Self::parse_from(&text, &path.display().to_string())
    }

    /// The TOML text.
    ///
    /// # Errors
    ///
    /// `ErrorKind::Config` if a value has no TOML form (a non-finite float).
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string(self).map_err(|e| Error::config(format!("config file: {e}")))
    }

    /// Writes the TOML text to `path` (through a temporary file and a rename, so a watcher
    /// never reads half a file).
    ///
    /// # Errors
    ///
    /// `ErrorKind::Config` with the I/O error as source.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, self.to_toml()?)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::config(format!("cannot write {}", path.display())).with_source(e))
    }

    /// Everything the file format can say about `config` (to save the configuration in
    /// force, e.g. from [`Client::config`]).
    pub fn from_config(config: &ClientConfig) -> ConfigFile {
        let p = &config.reconnect;
        let (strategy, initial, step, factor) = match p.strategy {
            Strategy::Never => (StrategyName::Never, None, None, None),
            Strategy::Linear { initial, step } => {
                (StrategyName::Linear, Some(initial), Some(step), None)
            }
            Strategy::Exponential { initial, factor } => {
                (StrategyName::Exponential, Some(initial), None, Some(factor))
            }
            Strategy::Jittered {
                initial,
                factor,
                jitter,
            } => {
                let name = match jitter {
                    Jitter::Full => StrategyName::Jittered,
                    Jitter::Decorrelated => StrategyName::Decorrelated,
                };
                (name, Some(initial), None, Some(factor))
            }
        };
        ConfigFile {
            url: Some(config.url.clone()),
            subprotocols: Some(config.subprotocols.clone()),
            request_timeout: None,
            max_in_flight: Some(config.max_in_flight),
            subscription_capacity: Some(config.subscription_capacity),
            max_message_size: Some(config.max_message_size),
            max_block: Some(Span(config.max_block)),
            overflow: Some(match config.overflow {
                OverflowPolicy::Block => OverflowName::Block,
                OverflowPolicy::DropNewest => OverflowName::DropNewest,
                OverflowPolicy::DropOldest => OverflowName::DropOldest,
                _ => OverflowName::Disconnect,
            }),
            timeouts: Some(TimeoutsSection {
                connect: Some(on(config.connect_timeout)),
                upgrade: Some(on(config.upgrade_timeout)),
                write: Some(on(config.write_timeout)),
                close: Some(on(config.close_timeout)),
                request: Some(on(config.request_timeout)),
            }),
            keepalive: Some(KeepaliveSection {
                ping_interval: Some(Span(config.keepalive.ping_interval)),
                timeout: Some(Span(config.keepalive.timeout)),
            }),
            reconnect: Some(ReconnectSection {
                strategy,
                initial: initial.map(on),
                step: step.map(on),
                factor,
                max_delay: Some(on(p.max_delay)),
                max_retries: p.max_retries,
                reset_after: Some(on(p.reset_after)),
            }),
            rate_limit: Some(match config.rate_limit {
                None => RateLimitSection::Off,
                Some(rl) => RateLimitSection::On(RateLimitTable {
                    burst: rl.burst,
                    per_second: rl.per_second,
                    max_wait: Some(Span(rl.max_wait)),
                    on_limit: Some(match rl.on_limit {
                        OnLimit::Queue => OnLimitName::Queue,
                        OnLimit::Reject => OnLimitName::Reject,
                    }),
                }),
            }),
            offline: Some(match config.offline {
                OfflinePolicy::Queue { capacity } => OfflineSection {
                    policy: OnLimitName::Queue,
                    capacity: Some(capacity),
                },
                _ => OfflineSection {
                    policy: OnLimitName::Reject,
                    capacity: None,
                },
            }),
        }
    }

    /// Writes what the file says into `config` (validation comes after, as a whole: see
    /// [`ClientConfig::validate`] and [`Client::reconfigure`]).
    pub fn apply(&self, config: &mut ClientConfig) {
        if let Some(url) = &self.url {
            config.url = url.clone();
        }
        if let Some(p) = &self.subprotocols {
            config.subprotocols = p.clone();
        }
        if let Some(Span(Some(d))) = self.request_timeout {
            config.request_timeout = d;
        }
        if let Some(n) = self.max_in_flight {
            config.max_in_flight = n;
        }
        if let Some(n) = self.subscription_capacity {
            config.subscription_capacity = n;
        }
        if let Some(n) = self.max_message_size {
            config.max_message_size = n;
        }
        if let Some(Span(d)) = self.max_block {
            config.max_block = d;
        }
        if let Some(o) = self.overflow {
            config.overflow = match o {
                OverflowName::Block => OverflowPolicy::Block,
                OverflowName::DropNewest => OverflowPolicy::DropNewest,
                OverflowName::DropOldest => OverflowPolicy::DropOldest,
                OverflowName::Disconnect => OverflowPolicy::Disconnect,
            };
        }
        if let Some(t) = &self.timeouts {
            for (slot, value) in [
                (&mut config.connect_timeout, t.connect),
                (&mut config.upgrade_timeout, t.upgrade),
                (&mut config.write_timeout, t.write),
                (&mut config.close_timeout, t.close),
                (&mut config.request_timeout, t.request),
            ] {
                // "off" is not a timeout: zero, which validation refuses by name.
                if let Some(Span(d)) = value {
                    *slot = d.unwrap_or(Duration::ZERO);
                }
            }
        }
        if let Some(k) = &self.keepalive {
            let mut ka: KeepaliveConfig = config.keepalive;
            if let Some(Span(d)) = k.ping_interval {
                ka.ping_interval = d;
            }
            if let Some(Span(d)) = k.timeout {
                ka.timeout = d;
            }
            config.keepalive = ka;
        }
        if let Some(r) = &self.reconnect {
            config.reconnect = reconnect_policy(r);
        }
        match &self.rate_limit {
            None => {}
            Some(RateLimitSection::Off) => config.rate_limit = None,
            Some(RateLimitSection::On(t)) => {
                let mut rl = RateLimit::new(t.burst, t.per_second);
                if let Some(Span(w)) = t.max_wait {
                    rl = rl.with_max_wait(w);
                }
                if let Some(OnLimitName::Reject) = t.on_limit {
                    rl = rl.with_on_limit(OnLimit::Reject);
                }
                config.rate_limit = Some(rl);
            }
        }
        if let Some(o) = &self.offline {
            config.offline = match o.policy {
                OnLimitName::Queue => OfflinePolicy::Queue {
                    capacity: o.capacity.unwrap_or(1024),
                },
                OnLimitName::Reject => OfflinePolicy::Reject,
            };
        }
    }
}

fn reconnect_policy(r: &ReconnectSection) -> ReconnectPolicy {
    let d = |s: Option<Span>, default: Duration| s.and_then(|s| s.0).unwrap_or(default);
    let initial = d(r.initial, Duration::from_millis(250));
    let cap = d(r.max_delay, Duration::from_secs(30));
    let factor = r.factor.unwrap_or(2.0);
    let mut p = match r.strategy {
        StrategyName::Never => return ReconnectPolicy::never(),
        StrategyName::Linear => ReconnectPolicy::linear(initial, d(r.step, initial), cap),
        StrategyName::Exponential => ReconnectPolicy::exponential(initial, cap),
        StrategyName::Jittered => ReconnectPolicy::jittered(initial, cap, Jitter::Full),
        StrategyName::Decorrelated => ReconnectPolicy::jittered(initial, cap, Jitter::Decorrelated),
    };
    match &mut p.strategy {
        Strategy::Exponential { factor: f, .. } | Strategy::Jittered { factor: f, .. } => {
            *f = factor;
        }
        _ => {}
    }
    p.max_retries = r.max_retries;
    if let Some(Span(Some(reset))) = r.reset_after {
        p.reset_after = reset;
    }
    p
}

/// Watches a configuration file and applies it to a live connection whenever it changes
/// (through [`Client::reconfigure`]: validated, atomic, the link stays up). A file that
/// does not parse or validate is refused with a clear error and the configuration in force
/// stays. Editors that replace the file (write a copy, rename) are followed: the watch is on
/// the file's directory.
///
/// ```no_run
/// # async fn demo(client: websockex_nova::Client) -> Result<(), websockex_nova::Error> {
/// use websockex_nova::config_file::ConfigWatcher;
///
/// let mut watcher = ConfigWatcher::spawn("nova.toml", client)?;
/// while let Some(outcome) = watcher.next().await {
///     match outcome {
///         Ok(changed) => eprintln!("applied now: {:?}, next connect: {:?}", changed.now, changed.on_connect),
///         Err(e) => eprintln!("config refused, keeping the old one: {e}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ConfigWatcher {
    outcomes: mpsc::Receiver<Result<Reconfigured, Error>>,
    task: tokio::task::JoinHandle<()>,
    _watcher: notify::RecommendedWatcher,
}

/// Edits arriving this close together are one reload.
const SETTLE: Duration = Duration::from_millis(50);

impl ConfigWatcher {
    /// Starts watching `path` for `client` (call inside a tokio runtime). The file is not
    /// applied at start: load it into the builder with [`ConfigFile::load`] and
    /// [`ConfigFile::apply`].
    ///
    /// # Errors
    ///
    /// `ErrorKind::Config` if the watch cannot be set up.
    pub fn spawn(path: impl Into<PathBuf>, client: Client) -> Result<ConfigWatcher, Error> {
        use notify::Watcher;
        let path: PathBuf = path.into();
        let name = path
            .file_name()
            .ok_or_else(|| Error::config(format!("{} is not a file path", path.display())))?
            .to_owned();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let changed = Arc::new(Notify::new());
        let signal = changed.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let ours = match &event {
                    Ok(e) => e
                        .paths
                        .iter()
                        .any(|p| p.file_name() == Some(name.as_os_str())),
                    Err(_) => true, // let the reload say what is wrong
                };
                if ours {
                    signal.notify_one();
                }
            })
            .map_err(|e| Error::config("cannot watch the config file").with_source(e))?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| Error::config(format!("cannot watch {}", dir.display())).with_source(e))?;
        let (tx, outcomes) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            loop {
                changed.notified().await;
                tokio::time::sleep(SETTLE).await;
                let outcome = match ConfigFile::load(&path) {
                    Ok(file) => client.reconfigure(move |c| file.apply(c)).await,
                    Err(e) => Err(e),
                };
                match &outcome {
                    Ok(r) if r.is_empty() => continue,
                    Ok(r) => {
                        tracing::info!(target: "websockex_nova", event = "config_reloaded", now = ?r.now, on_connect = ?r.on_connect)
                    }
                    Err(e) if e.is_closed() => return,
                    Err(e) => {
                        tracing::warn!(target: "websockex_nova", event = "config_refused", error = %e)
                    }
                }
                if tx.send(outcome).await.is_err() {
                    return;
                }
            }
        });
        Ok(ConfigWatcher {
            outcomes,
            task,
            _watcher: watcher,
        })
    }

    /// The outcome of the next reload that changed something or failed; `None` once the
    /// connection is closed.
    pub async fn next(&mut self) -> Option<Result<Reconfigured, Error>> {
        self.outcomes.recv().await
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_configuration_parses_back_to_the_same() {
        let mut config = ClientConfig::new("wss://example.com/ws?key=abc");
        config.rate_limit = Some(
            RateLimit::new(7, 3.5)
                .with_max_wait(None)
                .with_on_limit(OnLimit::Reject),
        );
        config.reconnect = ReconnectPolicy::linear(
            Duration::from_millis(70),
            Duration::from_millis(30),
            Duration::from_secs(9),
        )
        .with_max_retries(4);
        config.keepalive.ping_interval = None;
        let text = ConfigFile::from_config(&config).to_toml().unwrap();
        let mut back = ClientConfig::new("ws://other/");
        ConfigFile::parse(&text).unwrap().apply(&mut back);
        assert_eq!(back, config, "{text}");
        let shown = format!("{:?}", ConfigFile::from_config(&config));
        assert!(!shown.contains("key=abc"), "{shown}");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        for (text, says) in [
            ("request_timeout = 5", "invalid type"),
            (
                "[rate_limit]\nburst = 1\nper_second = 1.0\nspeed = 3",
                "unknown field `speed`",
            ),
            ("unknown = 1", "unknown field"),
            ("request_timeout = \"soon\"", "not a duration"),
            ("[reconnect]\nstrategy = \"sometimes\"", "unknown variant"),
            ("rate_limit = \"of\"", "\"off\""),
            ("[keepalive\nping_interval = \"1s\"", "line 1"),
        ] {
            let e = ConfigFile::parse(text).unwrap_err();
            assert_eq!(*e.kind(), crate::ErrorKind::Config, "{text}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }
}
