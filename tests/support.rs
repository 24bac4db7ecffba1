//! Helpers for whole-platform tests: start every service in this process on free ports over
//! a temporary data directory, as `emporium up` does.

use clap::Parser as _;
use emporium::run::{Plan, Platform, Service, Settings};

/// A running platform and the directory holding its data.
pub struct TestPlatform {
    pub platform: Platform,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Settings as `emporium up` would parse them, with every port free-picked and data under
/// `dir`, plus the extra flags given.
pub fn settings(dir: &std::path::Path, extra: &[&str]) -> Settings {
    let mut args = vec![
        "emporium".to_owned(),
        "up".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
        "--catalog-port".to_owned(),
        "0".to_owned(),
        "--workers".to_owned(),
        "2".to_owned(),
        "--admin-key".to_owned(),
        ADMIN_KEY.to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = emporium::cli::Cli::try_parse_from(args).expect("settings parse");
    match cli.command {
        emporium::cli::Command::Up(up) => Settings {
            common: up.common,
            catalog: up.catalog,
        },
        emporium::cli::Command::Serve(_) => unreachable!("built an up command"),
    }
}

pub const ADMIN_KEY: &str = "platform-test-admin-key";

impl TestPlatform {
    /// Every service, seeded with the demo shop.
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let platform = Platform::start(
            &settings(data_dir.path(), &[]),
            &Plan {
                services: Service::ALL.to_vec(),
                seed_when_empty: true,
            },
        )
        .await
        .expect("platform starts");
        Self {
            platform,
            data_dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, service: Service) -> String {
        self.platform.url(service).expect("service runs")
    }

    pub async fn get_json(&self, url: &str) -> serde_json::Value {
        let response = self.http.get(url).send().await.expect("send");
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }
}
