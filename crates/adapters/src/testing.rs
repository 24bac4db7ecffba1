//! What tests need to run against the local stand-ins that `scripts/test.sh` starts (moto
//! server for DynamoDB and S3, redis-server). Tests fail, loudly, when a stand-in is not
//! configured instead of skipping; and they refuse an endpoint that is not on this machine, so
//! a stray AWS configuration can never point a test at a real account.

/// The moto (or LocalStack) endpoint the AWS SDK will use; panics unless one on this machine is
/// configured.
pub fn aws_stand_in() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|start| endpoint.starts_with(start));
    assert!(
        local,
        "AWS_ENDPOINT_URL={endpoint:?}: these tests need a local DynamoDB/S3 stand-in; \
         run them with scripts/test.sh, which starts moto server"
    );
    endpoint
}

/// The shared Redis of the test run; panics unless configured.
pub fn redis_url() -> String {
    match std::env::var("EMPORIUM_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "EMPORIUM_TEST_REDIS_URL is not set: run the tests with scripts/test.sh, which starts redis-server"
        ),
    }
}

/// The redis-server binary, for tests that run (and kill) a Redis of their own.
pub fn redis_server() -> String {
    match std::env::var("EMPORIUM_TEST_REDIS_SERVER") {
        Ok(path) if !path.is_empty() => path,
        _ => panic!(
            "EMPORIUM_TEST_REDIS_SERVER is not set: run the tests with scripts/test.sh, which installs redis-server"
        ),
    }
}

/// A name no other test uses (lower case, so it is also a valid bucket name).
pub fn unique(label: &str) -> String {
    format!("t-{label}-{:08x}", rand::random::<u32>())
}

/// A moto server of one test's own, stopped when dropped. Whole-platform tests each take one:
/// moto slows down as the state of earlier tests piles up in a shared server (it copies a table
/// for every transaction), enough to turn a busy test's checkouts into timeouts.
pub struct MotoServer {
    child: std::process::Child,
    pub endpoint: String,
}

impl MotoServer {
    /// Starts `scripts/moto_server.py` on a free port (the interpreter and script from
    /// `EMPORIUM_TEST_MOTO_PYTHON` and `EMPORIUM_TEST_MOTO_SCRIPT`, which `scripts/test.sh`
    /// sets) and waits until it accepts connections.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port)
    }

    /// The same on `port`.
    pub fn start_on(port: u16) -> Self {
        let setting = |name: &str| match std::env::var(name) {
            Ok(value) if !value.is_empty() => value,
            _ => {
                panic!("{name} is not set: run the tests with scripts/test.sh, which installs moto")
            }
        };
        let (python, script) = (
            setting("EMPORIUM_TEST_MOTO_PYTHON"),
            setting("EMPORIUM_TEST_MOTO_SCRIPT"),
        );
        let child = std::process::Command::new(&python)
            .args([script.as_str(), "127.0.0.1", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} {script}: {e}"));
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto server did not start on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
