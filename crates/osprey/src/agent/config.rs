//! The agent's configuration (TOML). Every option has a default, so no file is needed;
//! `deploy/osprey.toml` documents them all. Errors carry file:line:col.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capabilities::module_defaults;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Where baselines, FIM databases and the event log position live.
    pub state_dir: PathBuf,
    /// Unix socket for `osprey ctl` (created with mode 0600).
    pub control_socket: PathBuf,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub health: HealthConfig,
    pub modules: ModulesConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Loopback by default: bind elsewhere only when asked.
    pub listen: SocketAddr,
    /// BPF run-time statistics: program runs and run time in the metrics, and the health
    /// check's "did not run" warnings. They cost every BPF program on the machine two clock
    /// reads per run, so they are off unless asked for (read at start).
    pub run_time_stats: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// JSON lines file; "-" for stdout.
    pub path: String,
    /// Rotate when the file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept (path.1 … path.N).
    pub keep: u32,
    /// Also send alerts, health warnings and agent notices to syslog.
    pub syslog: bool,
    /// The syslog datagram socket.
    pub syslog_socket: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Window over which drop rates and silence are judged.
    pub window_secs: u64,
    /// Warn when dropped / (emitted + dropped) exceeds this over the window.
    pub max_drop_ratio: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModulesConfig {
    #[serde(deserialize_with = "process_module")]
    pub process: ModuleConfig,
    pub security: SecurityConfig,
    #[serde(deserialize_with = "files_module")]
    pub files: ModuleConfig,
    #[serde(deserialize_with = "tcp_module")]
    pub tcp: ModuleConfig,
    pub profile: ProfileConfig,
    pub flows: FlowsConfig,
}

/// Rules (and syscall baselines) on the process, file-open and security events.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub enabled: bool,
    /// Load the embedded default rule set (`osprey rules show`).
    pub default_rules: bool,
    /// Further rule files, loaded after the defaults.
    pub rules: Vec<PathBuf>,
    /// Enforce the syscall baselines found in state_dir (learned by `osprey secure --learn`).
    pub baselines: bool,
    /// File integrity monitoring of these files and directories (recursive), with its
    /// database in state_dir/fim.json (`osprey secure --watch`).
    pub watch: Vec<PathBuf>,
    /// Events per second per process (kernel token bucket); 0: unlimited.
    pub rate_limit: u64,
    /// Ring buffer size in MiB (power of two); 0: the capability's default.
    pub ring_mib: u32,
}

/// Continuous CPU profiling of the whole host into state_dir/profiles.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    pub enabled: bool,
    /// Samples per second on each CPU.
    pub frequency_hz: u64,
    /// One pprof file per interval.
    pub interval_secs: u64,
    /// Profiles kept; the oldest are deleted.
    pub keep: u32,
}

/// Flow accounting (XDP + tcx) on the listed interfaces only.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    pub enabled: bool,
    /// Interfaces to watch; none: the module stays off.
    pub interfaces: Vec<String>,
    /// A flow is exported after this long without a packet.
    pub idle_timeout_secs: u64,
    /// Size of the kernel's LRU flow table.
    pub max_flows: u32,
    /// Write exported flow records to the event log (metrics are kept either way).
    pub log_records: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleConfig {
    pub enabled: bool,
    /// Events per second per process (kernel token bucket); 0: unlimited.
    pub rate_limit: u64,
    /// Ring buffer size in MiB (power of two); 0: the capability's default.
    pub ring_mib: u32,
    /// Only processes with this command name (filtered in the kernel).
    pub comm: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/osprey"),
            control_socket: PathBuf::from("/run/osprey/agent.sock"),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            health: HealthConfig::default(),
            modules: ModulesConfig::default(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            run_time_stats: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            path: "/var/log/osprey/events.jsonl".into(),
            max_bytes: 64 << 20,
            keep: 5,
            syslog: false,
            syslog_socket: PathBuf::from("/dev/log"),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            window_secs: 10,
            max_drop_ratio: 0.10,
        }
    }
}

/// A `[modules.NAME]` table changes only the keys it names; the others keep that module's
/// own defaults (`[modules.files] enabled = true` stays limited to 200 events/s).
fn module_over<'de, D: serde::Deserializer<'de>>(
    d: D,
    base: ModuleConfig,
) -> Result<ModuleConfig, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Partial {
        enabled: Option<bool>,
        rate_limit: Option<u64>,
        ring_mib: Option<u32>,
        comm: Option<String>,
    }
    let p = Partial::deserialize(d)?;
    Ok(ModuleConfig {
        enabled: p.enabled.unwrap_or(base.enabled),
        rate_limit: p.rate_limit.unwrap_or(base.rate_limit),
        ring_mib: p.ring_mib.unwrap_or(base.ring_mib),
        comm: p.comm.or(base.comm),
    })
}

fn process_module<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModuleConfig, D::Error> {
    module_over(d, ModulesConfig::default().process)
}

fn files_module<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModuleConfig, D::Error> {
    module_over(d, ModulesConfig::default().files)
}

fn tcp_module<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModuleConfig, D::Error> {
    module_over(d, ModulesConfig::default().tcp)
}

impl Default for ModulesConfig {
    fn default() -> Self {
        Self {
            process: ModuleConfig::defaults_of("process"),
            security: SecurityConfig::default(),
            files: ModuleConfig::defaults_of("files"),
            tcp: ModuleConfig::defaults_of("tcp"),
            profile: ProfileConfig::default(),
            flows: FlowsConfig::default(),
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        let registry = module_defaults("security");
        Self {
            enabled: registry.enabled,
            default_rules: true,
            rules: Vec::new(),
            baselines: true,
            watch: Vec::new(),
            rate_limit: registry.rate_limit,
            ring_mib: registry.ring_mib,
        }
    }
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            enabled: module_defaults("profile").enabled,
            frequency_hz: 19,
            interval_secs: 60,
            keep: 60,
        }
    }
}

impl Default for FlowsConfig {
    fn default() -> Self {
        Self {
            enabled: module_defaults("flows").enabled,
            interfaces: Vec::new(),
            idle_timeout_secs: 15,
            max_flows: 65536,
            log_records: true,
        }
    }
}

impl Default for ModuleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_limit: 0,
            ring_mib: 0,
            comm: None,
        }
    }
}

impl ModuleConfig {
    /// A module's defaults as the capability registry declares them.
    fn defaults_of(module: &str) -> Self {
        let d = module_defaults(module);
        Self {
            enabled: d.enabled,
            rate_limit: d.rate_limit,
            ring_mib: d.ring_mib,
            comm: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl AgentConfig {
    /// Parses TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError {
                file: file.to_string(),
                line,
                col,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate(text, file)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks values serde cannot, pointing at the offending value (the span the TOML
    /// parser gives it; its table when the key was left at its default).
    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let at = |key: &str, message: String| {
            let (line, col) = line_col(text, value_offset(text, key));
            ConfigError {
                file: file.to_string(),
                line,
                col,
                message,
            }
        };
        let m = &self.modules;
        for (name, ring_mib) in [
            ("process", m.process.ring_mib),
            ("files", m.files.ring_mib),
            ("tcp", m.tcp.ring_mib),
            ("security", m.security.ring_mib),
        ] {
            if ring_mib != 0 && (!ring_mib.is_power_of_two() || ring_mib > 1024) {
                return Err(at(
                    &format!("modules.{name}.ring_mib"),
                    format!("modules.{name}.ring_mib must be a power of two from 1 to 1024"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.health.max_drop_ratio) {
            return Err(at(
                "health.max_drop_ratio",
                "health.max_drop_ratio must be within 0..1".into(),
            ));
        }
        if self.health.window_secs == 0 {
            return Err(at(
                "health.window_secs",
                "health.window_secs must be at least 1".into(),
            ));
        }
        if !(1..=crate::profile::MAX_FREQUENCY_HZ).contains(&m.profile.frequency_hz) {
            return Err(at(
                "modules.profile.frequency_hz",
                format!(
                    "modules.profile.frequency_hz must be 1 to {}",
                    crate::profile::MAX_FREQUENCY_HZ
                ),
            ));
        }
        if m.profile.interval_secs == 0 || m.profile.keep == 0 {
            let key = if m.profile.keep == 0 {
                "modules.profile.keep"
            } else {
                "modules.profile.interval_secs"
            };
            return Err(at(
                key,
                "modules.profile.interval_secs and keep must be at least 1".into(),
            ));
        }
        if m.flows.idle_timeout_secs == 0 || m.flows.max_flows == 0 {
            let key = if m.flows.max_flows == 0 {
                "modules.flows.max_flows"
            } else {
                "modules.flows.idle_timeout_secs"
            };
            return Err(at(
                key,
                "modules.flows.idle_timeout_secs and max_flows must be at least 1".into(),
            ));
        }
        if self.log.max_bytes < 4096 {
            return Err(at(
                "log.max_bytes",
                "log.max_bytes must be at least 4096".into(),
            ));
        }
        // Watched paths must exist: named here with the file and line they come from.
        if m.security.enabled {
            for (i, path) in m.security.watch.iter().enumerate() {
                if let Err(e) = std::fs::canonicalize(path) {
                    return Err(at(
                        &format!("modules.security.watch.{i}"),
                        format!("modules.security.watch: {}: {e}", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Byte offset of the value at dotted `key` (array elements by index): the parser's span
/// of the value, else of the deepest table on the way that is there, else 0.
fn value_offset(text: &str, key: &str) -> usize {
    use toml::de::{DeTable, DeValue};
    let Ok(doc) = DeTable::parse(text) else {
        return 0;
    };
    let mut offset = 0;
    let mut current: Option<&DeValue> = None;
    let mut table = Some(doc.get_ref());
    for part in key.split('.') {
        let next = match (table, current) {
            (Some(t), _) => t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == part)
                .map(|(_, v)| v),
            (None, Some(DeValue::Array(a))) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        let Some(next) = next else {
            break;
        };
        offset = next.span().start;
        current = Some(next.get_ref());
        table = match next.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    offset
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(
            AgentConfig::parse("", "x.toml").unwrap(),
            AgentConfig::default()
        );
    }

    #[test]
    fn errors_point_at_the_key() {
        let err = AgentConfig::parse("[metrics]\nlisten = \"127.0.0.1:1\"\nbogus = 3\n", "a.toml")
            .unwrap_err();
        assert_eq!((err.file.as_str(), err.line, err.col), ("a.toml", 3, 1));
        assert!(err.message.contains("bogus"), "{}", err.message);
        let err = AgentConfig::parse("[modules.files]\nring_mib = 3\n", "b.toml").unwrap_err();
        assert_eq!((err.line, err.col), (2, 12), "the value");
        let err = AgentConfig::parse("[log]\nkeep = \"many\"\n", "c.toml").unwrap_err();
        assert_eq!((err.line, err.col), (2, 8));
    }

    #[test]
    fn checked_values_point_at_their_own_span() {
        // The same key in a comment and in another table comes first in the text.
        let text = "# ring_mib = 3 would be wrong\n[modules.process]\nring_mib = 8\n\n[modules.files]\nring_mib = 3\n";
        let err = AgentConfig::parse(text, "r.toml").unwrap_err();
        assert_eq!((err.line, err.col), (6, 12), "{err}");
        let text = "[modules.security]\nwatch = [\"/etc/hostname\",\n  \"/nonexistent/osprey\"]\n";
        let err = AgentConfig::parse(text, "w.toml").unwrap_err();
        assert_eq!(
            (err.file.as_str(), err.line, err.col),
            ("w.toml", 3, 3),
            "{err}"
        );
        assert!(err.message.contains("/nonexistent/osprey"), "{err}");
        assert!(!err.message.contains("--watch"), "{err}");
        let err = AgentConfig::parse("[health]\nmax_drop_ratio = 2.0\n", "h.toml").unwrap_err();
        assert_eq!((err.line, err.col), (2, 18), "{err}");
    }

    #[test]
    fn a_module_table_changes_only_the_keys_it_names() {
        let c = AgentConfig::parse("[modules.files]\nenabled = true\n", "f.toml").unwrap();
        assert!(c.modules.files.enabled);
        assert_eq!(c.modules.files.rate_limit, 200, "the files default stays");
        assert_eq!(c.modules.files.ring_mib, 4);
        let c = AgentConfig::parse("[modules.process]\nrate_limit = 5\n", "p.toml").unwrap();
        assert!(c.modules.process.enabled);
        let err = AgentConfig::parse("[modules.tcp]\nbogus = 1\n", "t.toml").unwrap_err();
        assert!(err.message.contains("bogus"), "{}", err.message);
    }

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let text = include_str!("../../../../deploy/osprey.toml");
        assert_eq!(
            AgentConfig::parse(text, "osprey.toml").unwrap(),
            AgentConfig::default()
        );
    }
}
