//! The command line: `emporium up` (the default), `emporium serve <service>`,
//! `emporium init` / `emporium seed`, which prepare the configured backends, and
//! `emporium load`, which load-tests a running shop.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use emporium_platform::recent_traces::{Limits, RecentTraces};
use emporium_platform::settings::apply_config_file;

use crate::run::{Plan, Platform, Service, Settings};

/// Emporium: an e-commerce platform of small services. `emporium` alone runs the whole shop on
/// embedded storage, cache and blobs under ./data.
#[derive(Parser, Debug)]
#[command(name = "emporium", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every service in one process, each on its own port (the default command).
    Up(UpArgs),
    /// Run one service, as its container does.
    Serve(ServeArgs),
    /// Create every table (keys, indexes, TTL) and the blob bucket in the configured backends;
    /// safe to run again.
    Init(SetupArgs),
    /// Load the demo catalog, images and stock into the configured backends; safe to run again.
    Seed(SetupArgs),
    /// Operate the events bus: a consumer group's dead letters (`dlq list`, `dlq redrive`).
    Events(crate::events_cli::EventsArgs),
    /// Load-test a running shop through its public API: weighted shopper sessions, a closed
    /// (--users) or open (--rate) model, a summary and a JSON result; exits non-zero when an
    /// objective (--max-p99-ms, --max-error-rate) is missed.
    Load(emporium_loadgen::LoadConfig),
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// Seconds `init` keeps trying while the storage or blob store does not answer yet (a
    /// LocalStack starting beside it); 0 tries once.
    #[arg(long = "wait-secs", env = "EMPORIUM_SETUP_WAIT_SECS", default_value_t = crate::setup::DEFAULT_SETUP_WAIT.as_secs())]
    pub wait_secs: u64,
    #[command(flatten)]
    pub services: Settings,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Start with an empty shop instead of loading the demo shop into empty stores.
    #[arg(long = "no-seed", env = "EMPORIUM_NO_SEED")]
    pub no_seed: bool,
    /// Port of the page of recent traces (on the services' host; 0 picks a free one).
    #[arg(
        long = "traces-port",
        env = "EMPORIUM_TRACES_PORT",
        default_value_t = 8090
    )]
    pub traces_port: u16,
    /// Keep no traces and serve no traces page.
    #[arg(long = "no-traces-page", env = "EMPORIUM_NO_TRACES_PAGE")]
    pub no_traces_page: bool,
    #[command(flatten)]
    pub services: Settings,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The service to run.
    #[arg(value_enum)]
    pub service: Service,
    #[command(flatten)]
    pub services: Settings,
}

/// `emporium` and `emporium --flag ...` mean `emporium up ...`.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let needs_up = match first.as_deref() {
        None => true,
        Some("-h" | "--help" | "-V" | "--version") => false,
        Some(flag) => flag.starts_with('-'),
    };
    if needs_up {
        args.insert(1.min(args.len()), OsString::from("up"));
    }
    args
}

/// Parses `args` (the program name first), applying the settings file.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let args = with_default_command(args);
    let command = apply_config_file(Cli::command(), &args)
        .map_err(|error| Cli::command().error(clap::error::ErrorKind::ValueValidation, error))?;
    let matches = command.try_get_matches_from(&args)?;
    Cli::from_arg_matches(&matches)
}

/// Threads for blocking work (the embedded store's reads, file I/O).
const MAX_BLOCKING_THREADS: usize = 8;

pub fn main() -> ExitCode {
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The embedded store's reads run here (each takes microseconds); tokio's default of
        // 512 threads only adds memory under load.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut traces_port = None;
    let (settings, plan, name, up) = match cli.command {
        Command::Init(args) => {
            return init(
                args.services,
                std::time::Duration::from_secs(args.wait_secs),
            )
            .await;
        }
        Command::Seed(args) => return seed(args.services).await,
        Command::Load(config) => return load(config).await,
        Command::Events(args) => {
            return crate::events_cli::run(args, &mut std::io::stdout().lock()).await;
        }
        Command::Up(args) => (
            {
                traces_port = (!args.no_traces_page).then_some(args.traces_port);
                args.services
            },
            Plan {
                services: Service::ALL.to_vec(),
                seed_when_empty: !args.no_seed,
                ..Plan::default()
            },
            "emporium",
            true,
        ),
        Command::Serve(args) => (
            args.services,
            Plan {
                services: vec![args.service],
                ..Plan::default()
            },
            args.service.name(),
            false,
        ),
    };
    let services: Vec<&'static str> = plan.services.iter().map(|s| s.name()).collect();
    // The page's listener is bound before anything starts, so its port is known and a port in
    // use only costs the page, with a warning, not the shop.
    let traces_page = traces_port.and_then(|port| {
        match std::net::TcpListener::bind((settings.common.host.as_str(), port)) {
            Ok(listener) => Some((listener, RecentTraces::new(Limits::default()))),
            Err(error) => {
                eprintln!(
                    "warning: no traces page: cannot listen on {}:{port}: {error} (choose another with --traces-port)",
                    settings.common.host
                );
                None
            }
        }
    });
    let _telemetry = emporium_platform::telemetry::init(
        name,
        &services,
        settings.common.log_format,
        &settings.common.log_filter,
        traces_page.as_ref().map(|(_, traces)| traces),
    )?;
    // Listening for SIGTERM before the servers start: in a container the process is PID 1,
    // whose signals without a handler are dropped, so a pod stopped while it starts (a rolling
    // update) would otherwise sit out its grace period and be killed.
    let stop = emporium_platform::shutdown::terminated();
    let platform = Platform::start(&settings, &plan).await?;
    let mut traces_server = None;
    if let Some((listener, traces)) = traces_page {
        let address = listener.local_addr()?;
        traces_server = Some((crate::traces_page::start(listener, traces)?, address));
    }
    if up {
        print_banner(
            &settings,
            &platform,
            traces_server.as_ref().map(|(_, a)| *a),
        );
    } else {
        for (service, url) in platform.endpoints() {
            tracing::info!(service, url, "listening");
        }
        if platform.admin_key_generated {
            tracing::warn!(
                "no admin key configured (EMPORIUM_ADMIN_KEY): admin endpoints accept only a random key nobody knows"
            );
        }
    }
    stop.await;
    if let Some((server, _)) = traces_server {
        server.stop(false).await;
    }
    platform.stop(true).await?;
    tracing::info!("stopped");
    Ok(())
}

fn setup_logs(settings: &Settings) -> anyhow::Result<emporium_platform::telemetry::TelemetryGuard> {
    emporium_platform::telemetry::init(
        "emporium-setup",
        &[],
        settings.common.log_format,
        &settings.common.log_filter,
        None,
    )
}

async fn init(settings: Settings, wait: std::time::Duration) -> anyhow::Result<()> {
    let _telemetry = setup_logs(&settings)?;
    let report = crate::setup::init_within(&settings, wait).await?;
    println!("Storage ready at {}:", report.storage);
    for (service, tables) in &report.tables {
        println!("  {service:<10} {}", tables.join(", "));
    }
    println!("Blob store ready at {}.", report.blobs);
    println!("Events bus ready at {}.", report.events);
    Ok(())
}

async fn seed(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = setup_logs(&settings)?;
    // Hidden by itself when stderr is not a terminal (a container's log), where the summary
    // line below is what is left.
    let bar = indicatif::ProgressBar::new(crate::demo::seed_steps()).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} seeding [{bar:30}] {pos}/{len} {wide_msg}",
        )?
        .progress_chars("=> "),
    );
    let progress = |item: &str| {
        bar.set_message(item.to_owned());
        bar.inc(1);
    };
    let report = crate::setup::seed(&settings, &progress).await;
    bar.finish_and_clear();
    let report = report?;
    println!(
        "Demo shop seeded: {} categories, {} products and stock for {} SKUs added \
         (0 means it was already there).",
        report.categories, report.products, report.stock
    );
    Ok(())
}

async fn load(config: emporium_loadgen::LoadConfig) -> anyhow::Result<()> {
    let report = emporium_loadgen::run(&config).await?;
    print!("{}", report.summary());
    emporium_loadgen::write(&config, &report)?;
    println!(
        "Result in {}, report in {}.",
        config.out.display(),
        config.html.display()
    );
    if !report.objectives.met {
        anyhow::bail!("objectives missed: {}", report.objectives.missed.join("; "));
    }
    Ok(())
}

/// A URI without its password, for printing.
fn redacted(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        _ => uri.to_owned(),
    }
}

fn print_banner(settings: &Settings, platform: &Platform, traces: Option<std::net::SocketAddr>) {
    let common = &settings.common;
    println!();
    println!("Emporium is up.");
    println!("  storage  {}", common.storage_uri());
    println!("  cache    {}", redacted(&common.cache_uri()));
    println!("  blobs    {}", common.blobs_uri());
    println!("  events   {}", common.events_uri());
    if let Some(report) = platform.seeded {
        println!(
            "Loaded the demo shop: {} categories, {} products, stock for {} SKUs.",
            report.categories, report.products, report.stock
        );
    }
    println!();
    for (service, url) in platform.endpoints() {
        let api = Service::named(service).map_or("/openapi.json", |s| s.spec().api_doc);
        println!("  {service:<12} {url}   (API: {url}{api})");
    }
    println!();
    if platform.admin_key_generated {
        println!(
            "  admin key    {}   (random for this run; set EMPORIUM_ADMIN_KEY to choose one)",
            platform.admin_key
        );
    } else {
        println!("  admin key    as configured");
    }
    if let Some(key) = &platform.gateway_key {
        if settings.common.gateway_key.is_some() {
            println!("  gateway key  as configured");
        } else {
            println!(
                "  gateway key  {key}   (the services show it to each other as X-Emporium-Gateway; calling the order service directly needs it)"
            );
        }
    }
    println!();
    if let Some(shop) = platform.url(Service::Storefront) {
        println!("Open the shop:  {shop}/");
    }
    if let Some(address) = traces {
        let host = if address.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            address.ip().to_string()
        };
        println!("Recent traces:  http://{host}:{}/", address.port());
    }
    println!(
        "Try:  curl {}/v1/products",
        platform.url(Service::Catalog).unwrap_or_default()
    );
    println!("Stop with Ctrl-C.");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn no_command_means_up() {
        let cli = parse(args(&["emporium"])).expect("parse");
        assert!(matches!(cli.command, Command::Up(_)));
        let cli = parse(args(&["emporium", "--catalog-port", "9999"])).expect("parse");
        let Command::Up(up) = cli.command else {
            panic!("up")
        };
        assert_eq!(up.services.peers.port(Service::Catalog), 9999);
    }

    #[test]
    fn keys_never_show_in_the_settings() {
        let keys = [
            "admin-9f8e7d6c5b4a39281706",
            "gateway-1a2b3c4d5e6f7a8b9c0d",
            "session-0123456789abcdef0123456789abcdef",
        ];
        let cli = parse(args(&[
            "emporium",
            "up",
            "--admin-key",
            keys[0],
            "--gateway-key",
            keys[1],
            "--session-key",
            keys[2],
        ]))
        .expect("parse");
        let parsed = format!("{cli:?}");
        let Command::Up(up) = cli.command else {
            panic!("up")
        };
        let settings = up.services;
        let dumps = [parsed, format!("{settings:?}"), format!("{settings:#?}")];
        for dump in &dumps {
            assert!(dump.contains("REDACTED"), "{dump}");
            for key in keys {
                assert!(!dump.contains(key), "{key} in {dump}");
            }
        }
        // The keys are all there to use, just never shown.
        use secrecy::ExposeSecret as _;
        assert_eq!(
            settings
                .common
                .admin_key
                .as_ref()
                .map(|k| k.expose_secret()),
            Some(keys[0])
        );
    }

    #[test]
    fn printed_uris_hide_passwords() {
        assert_eq!(
            redacted("redis://:secret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            redacted("rediss://app:secret@cache:6379"),
            "rediss://app:***@cache:6379"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redacted("redis://app@cache:6379"), "redis://app@cache:6379");
        assert_eq!(redacted("memory://"), "memory://");
    }

    #[test]
    fn serve_names_its_service() {
        let cli =
            parse(args(&["emporium", "serve", "catalog", "--host", "0.0.0.0"])).expect("parse");
        let Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        assert_eq!(serve.service, Service::Catalog);
        assert_eq!(serve.services.common.host, "0.0.0.0");
        assert!(parse(args(&["emporium", "serve", "warehouse"])).is_err());
    }

    #[test]
    fn help_documents_every_setting_with_its_variable() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("up")
            .expect("up")
            .render_long_help()
            .to_string();
        for variable in [
            "EMPORIUM_CONFIG",
            "EMPORIUM_DATA_DIR",
            "EMPORIUM_STORAGE",
            "EMPORIUM_CACHE",
            "EMPORIUM_BLOBS",
            "EMPORIUM_ADMIN_KEY",
            "EMPORIUM_CATALOG_PORT",
            "EMPORIUM_INVENTORY_PORT",
            "EMPORIUM_CART_PORT",
            "EMPORIUM_ORDER_PORT",
            "EMPORIUM_CATALOG_URL",
            "EMPORIUM_ORDER_TAX_RATE_BPS",
            "EMPORIUM_LOG_FORMAT",
            "EMPORIUM_BODY_LIMIT_BYTES",
        ] {
            assert!(help.contains(variable), "--help names {variable}");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
