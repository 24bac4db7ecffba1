//! Layered settings: built-in defaults, then a TOML file, then `EMPORIUM_*` environment
//! variables, then command-line flags.
//!
//! Every setting is a clap argument with an `env` attribute, so `--help` documents the flag, the
//! variable and the default in one place. The file layer is applied by rewriting the defaults of
//! those same arguments before parsing, which keeps clap's own precedence (flag > env > default)
//! and means the file cannot name a setting that `--help` does not show. A crate such as figment
//! layers sources well but cannot produce that help text, which is why this is done here.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::OsStr;
use clap::{Args, Command, ValueEnum};
use secrecy::SecretString;

/// Reads a key given on the command line, in the environment or in the settings file into a
/// secret: `Debug` shows it as `[REDACTED]`, so no settings dump, log line or panic carries it.
pub fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text))
}

/// Environment variable naming the settings file when `--config` is not given.
pub const CONFIG_ENV: &str = "EMPORIUM_CONFIG";

/// Settings every service shares. Service-specific settings live beside each service.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Common settings")]
pub struct CommonSettings {
    /// TOML file with settings; keys are the long flag names (`data-dir = "..."`), and a table
    /// prefixes its keys (`[catalog] port = 8081` sets `--catalog-port`).
    #[arg(long = "config", env = CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address every service binds to.
    #[arg(long = "host", env = "EMPORIUM_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Directory holding the embedded store and the blob directory when those use their defaults.
    #[arg(long = "data-dir", env = "EMPORIUM_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Storage backend. `embedded:///<dir>` keeps one crash-safe file per service in <dir>;
    /// `dynamodb://<prefix>` uses the DynamoDB tables `<prefix>-<table>` (region, credentials and
    /// `AWS_ENDPOINT_URL` come from the standard AWS configuration).
    /// [default: embedded storage under --data-dir]
    #[arg(long = "storage", env = "EMPORIUM_STORAGE", value_name = "URI")]
    pub storage: Option<String>,

    /// Cache backend. `memory://` is an in-process cache (`memory://?capacity_mb=8` sizes it,
    /// 8 MiB by default);
    /// `redis://host:port[/db]` (or `rediss://`) is Redis or ElastiCache, with the options
    /// `prefix`, `pool_size` and `timeout_ms`. [default: REDIS_URL when set, else memory://]
    #[arg(long = "cache", env = "EMPORIUM_CACHE", value_name = "URI")]
    pub cache: Option<String>,

    /// Redis to cache in when --cache is not given, under the variable Redis clients share.
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Blob store for product images and static files. `file:///<dir>` is a local directory;
    /// `s3://<bucket>[/<prefix>]` is an S3 bucket. [default: a directory under --data-dir]
    #[arg(long = "blobs", env = "EMPORIUM_BLOBS", value_name = "URI")]
    pub blobs: Option<String>,

    /// Events bus between the services (docs/EVENTS.md). `embedded:///<dir>` keeps it in
    /// `<dir>/events.redb`, for the services of one process; `sns://<prefix>` is SNS topics and
    /// SQS queues named from the prefix (with `?endpoint=<url>` for a stand-in).
    /// [default: beside the storage: `embedded://` in the embedded store's directory, or
    /// `sns://<prefix>` for `dynamodb://<prefix>`]
    #[arg(long = "events", env = "EMPORIUM_EVENTS", value_name = "URI")]
    pub events: Option<String>,

    /// Log line format: `pretty` for people, `json` for log collectors.
    #[arg(long = "log-format", env = "EMPORIUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` directive syntax (RUST_LOG, when set, wins).
    #[arg(long = "log", env = "EMPORIUM_LOG", default_value = "info")]
    pub log_filter: String,

    /// Bearer key for admin endpoints. [default: a random key, printed at start]
    #[arg(
        long = "admin-key",
        env = "EMPORIUM_ADMIN_KEY",
        hide_env_values = true,
        value_parser = secret
    )]
    pub admin_key: Option<SecretString>,

    /// Key the services send each other (`X-Emporium-Gateway`); the order service serves a
    /// customer's orders only to callers that have it, so a request that skips the storefront
    /// cannot claim to be any customer. [default: a random key when one process runs every
    /// service; none, and no check, for a single service without one]
    #[arg(
        long = "gateway-key",
        env = "EMPORIUM_GATEWAY_KEY",
        hide_env_values = true,
        value_parser = secret
    )]
    pub gateway_key: Option<SecretString>,

    /// Follow the `traceparent` of any caller, not only of the shop's services: for a service
    /// behind a proxy or gateway that starts the traces. Off, a stranger's trace context is
    /// ignored and its request starts a trace of its own.
    #[arg(long = "trust-trace-context", env = "EMPORIUM_TRUST_TRACE_CONTEXT")]
    pub trust_trace_context: bool,

    /// Largest request body accepted by JSON endpoints, in bytes.
    #[arg(long = "body-limit-bytes", env = "EMPORIUM_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,

    /// Milliseconds a request's body may take to arrive after its headers; a slower one gets 408
    /// and its connection is closed. The body is read before the request counts against
    /// --max-in-flight, so clients that trickle bytes cannot hold the service's slots.
    #[arg(
        long = "body-timeout-ms",
        env = "EMPORIUM_BODY_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub body_timeout_ms: u64,

    /// HTTP worker threads per service. [default: number of CPUs]
    #[arg(long = "workers", env = "EMPORIUM_WORKERS")]
    pub workers: Option<usize>,

    /// Seconds in-flight requests get to finish after SIGTERM before they are cut off.
    #[arg(
        long = "shutdown-timeout-secs",
        env = "EMPORIUM_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub shutdown_timeout_secs: u64,

    /// Whole-request timeout for calls between services, in milliseconds.
    #[arg(
        long = "http-timeout-ms",
        env = "EMPORIUM_HTTP_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub http_timeout_ms: u64,

    /// Connect timeout for calls between services, in milliseconds.
    #[arg(
        long = "http-connect-timeout-ms",
        env = "EMPORIUM_HTTP_CONNECT_TIMEOUT_MS",
        default_value_t = 1_000
    )]
    pub http_connect_timeout_ms: u64,

    /// Retries of an idempotent call to another service after a failure that may pass, with
    /// exponential backoff and jitter.
    #[arg(
        long = "http-retries",
        env = "EMPORIUM_HTTP_RETRIES",
        default_value_t = 2
    )]
    pub http_retries: usize,

    /// Requests one service serves at once; more are refused with 503 and `Retry-After` at
    /// once, rather than queued until they time out; 0 takes every request. Probes and metrics
    /// are never refused.
    #[arg(
        long = "max-in-flight",
        env = "EMPORIUM_MAX_IN_FLIGHT",
        default_value_t = 512
    )]
    pub max_in_flight: usize,

    /// Deadline of a whole call to another service, retries included, in milliseconds.
    #[arg(
        long = "http-deadline-ms",
        env = "EMPORIUM_HTTP_DEADLINE_MS",
        default_value_t = 10_000
    )]
    pub http_deadline_ms: u64,

    /// Consecutive failed calls to another service that open its circuit: calls then fail at
    /// once until a probe succeeds.
    #[arg(
        long = "http-breaker-failures",
        env = "EMPORIUM_HTTP_BREAKER_FAILURES",
        default_value_t = 5
    )]
    pub http_breaker_failures: u32,

    /// How long an opened circuit stays open before a probe, in milliseconds (doubling, up to
    /// 30 s, while probes fail).
    #[arg(
        long = "http-breaker-open-ms",
        env = "EMPORIUM_HTTP_BREAKER_OPEN_MS",
        default_value_t = 1_000
    )]
    pub http_breaker_open_ms: u64,

    /// Fault injection from the start: latency added to every request but probes and metrics,
    /// in milliseconds (as `PUT /admin/faults` sets it; off at 0). For practising failure on a
    /// cluster, where a Deployment's every pod takes it from its environment.
    #[arg(
        long = "fault-latency-ms",
        env = "EMPORIUM_FAULT_LATENCY_MS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(..=crate::faults::MAX_LATENCY_MS)
    )]
    pub fault_latency_ms: u64,

    /// Fault injection from the start: the fraction of requests (0 to 1) answered 503
    /// `fault_injected`.
    #[arg(
        long = "fault-error-rate",
        env = "EMPORIUM_FAULT_ERROR_RATE",
        default_value_t = 0.0
    )]
    pub fault_error_rate: f64,

    /// Fault injection from the start: dependencies whose every call fails, comma-separated
    /// (only ones the service has).
    #[arg(
        long = "fault-outage",
        env = "EMPORIUM_FAULT_OUTAGE",
        value_delimiter = ',',
        value_name = "DEPENDENCY"
    )]
    pub fault_outage: Vec<String>,

    /// How long cached reads live, in seconds (each entry gets up to 10% random jitter).
    #[arg(
        long = "cache-ttl-secs",
        env = "EMPORIUM_CACHE_TTL_SECS",
        default_value_t = 300
    )]
    pub cache_ttl_secs: u64,

    /// The shop's currency (ISO 4217). Every price must be in it.
    #[arg(long = "currency", env = "EMPORIUM_CURRENCY", default_value = "USD")]
    pub currency: String,
}

impl CommonSettings {
    /// Storage URI, resolving the default to the embedded store under the data directory.
    pub fn storage_uri(&self) -> String {
        self.storage.clone().unwrap_or_else(|| {
            format!(
                "embedded://{}",
                absolute(&self.data_dir.join("storage")).display()
            )
        })
    }

    /// Events URI: the configured one, else beside the storage (the same directory for the
    /// embedded store, the same prefix and endpoint on SNS and SQS for DynamoDB).
    pub fn events_uri(&self) -> String {
        if let Some(uri) = &self.events {
            return uri.clone();
        }
        let storage = self.storage_uri();
        if let Some(rest) = storage.strip_prefix("dynamodb://") {
            return format!("sns://{rest}");
        }
        storage
    }

    /// Blob URI, resolving the default to a directory under the data directory.
    pub fn blobs_uri(&self) -> String {
        self.blobs.clone().unwrap_or_else(|| {
            format!(
                "file://{}",
                absolute(&self.data_dir.join("blobs")).display()
            )
        })
    }

    /// Cache URI: the configured one, else `REDIS_URL`, else the in-process cache.
    pub fn cache_uri(&self) -> String {
        self.cache
            .clone()
            .or_else(|| self.redis_url.clone().filter(|url| !url.is_empty()))
            .unwrap_or_else(|| "memory://".to_owned())
    }

    /// The fault switches a service starts with (all off unless set).
    pub fn faults(&self) -> crate::faults::FaultRequest {
        crate::faults::FaultRequest {
            latency_ms: self.fault_latency_ms,
            error_rate: self.fault_error_rate,
            outage: self.fault_outage.clone(),
            ..crate::faults::FaultRequest::default()
        }
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    pub fn client_settings(&self) -> crate::client::ClientSettings {
        crate::client::ClientSettings {
            timeout: Duration::from_millis(self.http_timeout_ms),
            connect_timeout: Duration::from_millis(self.http_connect_timeout_ms),
            gateway_key: self.gateway_key.clone(),
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("settings file {path}: `{key}` {problem}")]
    Key {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// Applies the settings file named by `--config` (or `EMPORIUM_CONFIG`) to `command` by making
/// each value in the file the default of the argument with that long name, in the command and in
/// every subcommand that has it. Call before parsing `args` with the returned command.
pub fn apply_config_file(command: Command, args: &[OsString]) -> Result<Command, SettingsError> {
    let Some(path) = config_path(args) else {
        return Ok(command);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| SettingsError::Parse {
        path: path.clone(),
        source,
    })?;
    let mut values = BTreeMap::new();
    flatten_table("", &table, &path, &mut values)?;

    let mut command = command;
    for (key, value) in values {
        if key == "config" {
            return Err(SettingsError::Key {
                path,
                key,
                problem: "cannot be set from a settings file".into(),
            });
        }
        let mut found = false;
        command = set_default(command, &key, &value, &mut found);
        if !found {
            return Err(SettingsError::Key {
                path,
                key,
                problem: "is not a known setting (see --help)".into(),
            });
        }
    }
    Ok(command)
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

fn flatten_table(
    prefix: &str,
    table: &toml::Table,
    path: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<(), SettingsError> {
    for (key, value) in table {
        let key = key.replace('_', "-");
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}-{key}")
        };
        let text = match value {
            toml::Value::Table(inner) => {
                flatten_table(&name, inner, path, out)?;
                continue;
            }
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Datetime(_) | toml::Value::Array(_) => {
                return Err(SettingsError::Key {
                    path: path.to_path_buf(),
                    key: name,
                    problem: "must be a string, number or boolean".into(),
                });
            }
        };
        out.insert(name, text);
    }
    Ok(())
}

fn set_default(command: Command, long: &str, value: &str, found: &mut bool) -> Command {
    let id = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .map(|arg| arg.get_id().clone());
    let mut command = match id {
        Some(id) => {
            *found = true;
            let value = OsStr::from(value.to_owned());
            command.mut_arg(id, |arg| arg.default_value(value))
        }
        None => command,
    };
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| set_default(sub, long, value, found));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{FromArgMatches, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Subcommand, Debug)]
    enum Sub {
        Up {
            #[command(flatten)]
            common: CommonSettings,
            #[arg(
                long = "catalog-port",
                env = "TEST_SETTINGS_CATALOG_PORT",
                default_value_t = 8081
            )]
            catalog_port: u16,
        },
    }

    fn parse(args: &[&str]) -> Result<(CommonSettings, u16), String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let command = apply_config_file(<Cli as clap::CommandFactory>::command(), &args)
            .map_err(|e| e.to_string())?;
        let matches = command
            .try_get_matches_from(&args)
            .map_err(|e| e.to_string())?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let Sub::Up {
            common,
            catalog_port,
        } = cli.command;
        Ok((common, catalog_port))
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> String {
        let path = dir.path().join("emporium.toml");
        std::fs::write(&path, text).expect("write settings file");
        path.display().to_string()
    }

    #[test]
    fn the_cache_is_the_configured_one_else_redis_url_else_memory() {
        let (common, _) = parse(&["emporium", "up"]).expect("parse");
        if std::env::var_os("REDIS_URL").is_none() && std::env::var_os("EMPORIUM_CACHE").is_none() {
            assert_eq!(common.cache_uri(), "memory://");
        }
        let (common, _) =
            parse(&["emporium", "up", "--redis-url", "redis://r:6379"]).expect("parse");
        assert_eq!(common.cache_uri(), "redis://r:6379");
        let (common, _) = parse(&[
            "emporium",
            "up",
            "--redis-url",
            "redis://r:6379",
            "--cache",
            "memory://?capacity_mb=8",
        ])
        .expect("parse");
        assert_eq!(common.cache_uri(), "memory://?capacity_mb=8");
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let (common, port) = parse(&["emporium", "up"]).expect("parse");
        assert_eq!(common.host, "127.0.0.1");
        assert_eq!(common.body_limit_bytes, 64 * 1024);
        assert_eq!(port, 8081);
    }

    #[test]
    fn file_values_replace_defaults_and_tables_prefix_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            &dir,
            "host = \"0.0.0.0\"\nbody_limit_bytes = 1024\n[catalog]\nport = 9000\n",
        );
        let (common, port) = parse(&["emporium", "up", "--config", &path]).expect("parse");
        assert_eq!(common.host, "0.0.0.0");
        assert_eq!(common.body_limit_bytes, 1024);
        assert_eq!(port, 9000);
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "[catalog]\nport = 9000\n");
        let (_, port) = parse(&[
            "emporium",
            "up",
            &format!("--config={path}"),
            "--catalog-port",
            "9100",
        ])
        .expect("parse");
        assert_eq!(port, 9100);
    }

    #[test]
    fn environment_beats_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "data-dir = \"/from-file\"\n");
        let args: Vec<OsString> = ["emporium", "up", "--config", &path]
            .iter()
            .map(OsString::from)
            .collect();
        let command =
            apply_config_file(<Cli as clap::CommandFactory>::command(), &args).expect("apply file");
        // Mutating the process environment is unsafe under edition 2024, so point the argument at
        // a variable every test process already has.
        let command =
            command.mut_subcommand("up", |sub| sub.mut_arg("data_dir", |arg| arg.env("PATH")));
        let matches = command.try_get_matches_from(&args).expect("parse");
        let cli = Cli::from_arg_matches(&matches).expect("from matches");
        let Sub::Up { common, .. } = cli.command;
        let expected = std::env::var_os("PATH").expect("PATH is set");
        assert_eq!(common.data_dir.as_os_str(), expected);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "[catalog]\nprot = 9000\n");
        let error = parse(&["emporium", "up", "--config", &path]).expect_err("must fail");
        assert!(error.contains("catalog-prot"), "{error}");
    }

    #[test]
    fn invalid_values_from_the_file_fail_like_invalid_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "[catalog]\nport = \"eighty\"\n");
        let error = parse(&["emporium", "up", "--config", &path]).expect_err("must fail");
        assert!(error.contains("eighty"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let error =
            parse(&["emporium", "up", "--config", "/nonexistent/emporium.toml"]).expect_err("fail");
        assert!(error.contains("cannot read"), "{error}");
    }
}
