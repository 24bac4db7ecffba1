//! The real `emporium` binary, as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

struct Running {
    child: Child,
    url: String,
    stdout: Vec<String>,
}

/// Starts `emporium` with `args`, waits for its banner's last line, and returns what it printed.
fn start(data_dir: &std::path::Path, port: u16, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["--data-dir", &data_dir.display().to_string()])
        .args(["--catalog-port", &port.to_string(), "--log", "warn"])
        .args(extra)
        .env_remove("EMPORIUM_ADMIN_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn emporium");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                let done = line.starts_with("Stop with Ctrl-C");
                seen.push(line);
                if done {
                    break;
                }
            }
            _ => break,
        }
    }
    assert!(
        seen.iter().any(|l| l.starts_with("Stop with Ctrl-C")),
        "emporium did not come up: {seen:?}"
    );
    Running {
        child,
        url: format!("http://127.0.0.1:{port}"),
        stdout: seen,
    }
}

fn terminate(mut running: Running) {
    let pid = running.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "emporium exits cleanly on SIGTERM: {status}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "emporium did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every product, following cursors, from a blocking test.
fn all_products(base: &str) -> Vec<Value> {
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let http = reqwest::Client::new();
            let mut products = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut request = http
                    .get(format!("{base}/v1/products"))
                    .query(&[("limit", "50")]);
                if let Some(cursor) = &cursor {
                    request = request.query(&[("cursor", cursor)]);
                }
                let page: Value = request
                    .send()
                    .await
                    .expect("send")
                    .json()
                    .await
                    .expect("json");
                products.extend(page["items"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => return products,
                }
            }
        })
    }
}

#[test]
fn up_seeds_the_demo_shop_once_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();

    let first = start(dir.path(), port, &[]);
    assert!(
        first
            .stdout
            .iter()
            .any(|l| l.starts_with("Loaded the demo shop")),
        "{:?}",
        first.stdout
    );
    assert!(first.stdout.iter().any(|l| l.contains("admin key")));
    let products = all_products(&first.url);
    assert!(products.len() >= 48, "{} products", products.len());
    let categories: std::collections::BTreeSet<&str> = products
        .iter()
        .filter_map(|p| p["category"].as_str())
        .collect();
    assert!(categories.len() >= 6, "{categories:?}");
    for product in &products {
        let image = product["images"][0]
            .as_str()
            .expect("every product has an image");
        let file = dir.path().join("blobs/objects").join(image);
        assert!(file.exists(), "image {image} is in the blob store");
    }
    terminate(first);

    let second = start(dir.path(), port, &[]);
    assert!(
        !second
            .stdout
            .iter()
            .any(|l| l.starts_with("Loaded the demo shop")),
        "a second start does not seed again"
    );
    let again = all_products(&second.url);
    assert_eq!(again, products, "the same products, kept");
    terminate(second);
}

#[test]
fn no_seed_starts_an_empty_shop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path(), free_port(), &["--no-seed"]);
    assert!(all_products(&running.url).is_empty());
    terminate(running);
}

#[test]
fn help_lists_the_settings_and_bad_settings_fail_clearly() {
    let help = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["up", "--help"])
        .output()
        .expect("run");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("EMPORIUM_DATA_DIR") && text.contains("--catalog-port"));

    let bad = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["up", "--catalog-port", "eighty"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("eighty"));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("emporium.toml");
    std::fs::write(&config, "[catalog]\nprot = 1\n").expect("write");
    let typo = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["up", "--config", &config.display().to_string()])
        .output()
        .expect("run");
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("catalog-prot"));
}
