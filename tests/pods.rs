//! The image and the kind overlay's and the chart's pods, run for real: the image is built from
//! the Dockerfile's runtime stage around this build's binary, `k8s/overlays/kind` (then the
//! chart's default render) is rendered and turned into bare pods, and podman runs them on a
//! fresh network under their security context:
//! LocalStack's and Redis's stand-ins, the setup job (`init`, then `seed`), and every service.
//! Then: each service answers `/healthz` and `/readyz` within its probes' budget as the manifest
//! states it (podman runs no probes: the test makes them as the kubelet does, on the pod's
//! address); inside a service the user is 10001, no capability is left and the root filesystem
//! is read-only while `/tmp` is writable; the storefront serves its home page with its images;
//! a short load through it has no errors; and a pod told to stop exits 0 within its grace.
//!
//! What kind itself adds (its node image, the NodePort mapping, NetworkPolicy enforcement, the
//! HPA and PDB, LocalStack itself) only a real cluster shows: see README, "Deploy to kind".
//!
//! The tools and images come from `scripts/test.sh` (`install_podman`, `prepare_pod_images`),
//! through `EMPORIUM_TEST_PODMAN` and `CONTAINERS_CONF`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use emporium_tests::manifests::{kind_of, must, name_of, objects, root, tool};
use serde_norway::{Mapping, Value};

/// podman for one test: every pod it starts is removed, and its network, when it ends.
struct Podman {
    program: String,
    network: String,
    image: String,
    pods: Vec<String>,
    /// podman 4.3 makes a named volume of each emptyDir, by the volume's name.
    volumes: std::collections::BTreeSet<String>,
}

impl Podman {
    fn new() -> Self {
        let program = tool("EMPORIUM_TEST_PODMAN");
        let run = emporium_platform::id::new_id().to_ascii_lowercase();
        let network = format!("emporium-pods-{run}");
        // A fresh network each run: a reused one kept a stale DNS answer once.
        must(&program, &["network", "create", &network]);
        Self {
            program,
            network,
            image: format!("localhost/emporium-test:{run}"),
            pods: Vec::new(),
            volumes: std::collections::BTreeSet::new(),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        must(&self.program, args)
    }

    /// Builds the Dockerfile's runtime stage around `binary`, as the image a cluster runs.
    fn build_image(&self, binary: &Path) {
        let context = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(context.path().join("out")).expect("mkdir");
        std::fs::copy(binary, context.path().join("out/emporium")).expect("copy the binary");
        let stage = format!("build={}", context.path().display());
        let dockerfile = root().join("Dockerfile");
        self.run(&[
            "build",
            "--quiet",
            "--build-context",
            &stage,
            "--target",
            "runtime",
            "--tag",
            &self.image,
            "--file",
            &dockerfile.display().to_string(),
            &root().display().to_string(),
        ]);
    }

    /// Starts `pod` (a bare Pod) on the network.
    fn play(&mut self, pod: &Value) {
        let name = name_of(pod);
        self.remove(&name);
        for volume in pod["spec"]["volumes"].as_sequence().into_iter().flatten() {
            if let Some(volume) = volume["name"].as_str() {
                self.volumes.insert(volume.to_owned());
            }
        }
        let file = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(file.path(), serde_norway::to_string(pod).expect("yaml")).expect("write");
        self.pods.push(name.clone());
        self.run(&[
            "kube",
            "play",
            "--network",
            &self.network,
            &file.path().display().to_string(),
        ]);
    }

    /// The address of `pod` on the network.
    fn address(&self, pod: &str) -> String {
        let infra = self.run(&["pod", "inspect", pod, "--format", "{{.InfraContainerID}}"]);
        let template = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        );
        self.run(&["inspect", infra.trim(), "--format", &template])
            .trim()
            .to_owned()
    }

    /// `podman kube play` names a pod's containers `<pod>-<container>`.
    fn container(pod: &str, container: &str) -> String {
        format!("{pod}-{container}")
    }

    fn exec(&self, container: &str, command: &[&str]) -> std::process::Output {
        Command::new(&self.program)
            .arg("exec")
            .arg(container)
            .args(command)
            .output()
            .expect("podman exec")
    }

    fn state(&self, container: &str) -> (String, i64) {
        let out = self.run(&[
            "inspect",
            container,
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
        ]);
        let mut parts = out.split_whitespace();
        let status = parts.next().unwrap_or_default().to_owned();
        let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
        (status, code)
    }
}

impl Podman {
    /// Removes `pod` (what an earlier run left too: pods are named like Services, so a run
    /// needs the names free) and the volumes its emptyDirs became.
    fn remove(&self, pod: &str) {
        let _ = Command::new(&self.program)
            .args(["pod", "rm", "--force", "--time", "2", pod])
            .output();
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for pod in &self.pods {
            self.remove(pod);
        }
        for volume in &self.volumes {
            let _ = Command::new(&self.program)
                .args(["volume", "rm", "--force", volume])
                .output();
        }
        let _ = Command::new(&self.program)
            .args(["network", "rm", "--force", &self.network])
            .output();
        let _ = Command::new(&self.program)
            .args(["rmi", "--force", &self.image])
            .output();
    }
}

fn sources(objects: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    for object in objects {
        let mut data = BTreeMap::new();
        let text = |value: &Value| value.as_str().map(str::to_owned);
        match kind_of(object) {
            "ConfigMap" => {
                for (key, value) in object["data"].as_mapping().into_iter().flatten() {
                    if let (Some(key), Some(value)) = (text(key), text(value)) {
                        data.insert(key, value);
                    }
                }
            }
            "Secret" => {
                for (key, value) in object["data"].as_mapping().into_iter().flatten() {
                    let decoded = text(value)
                        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                        .and_then(|bytes| String::from_utf8(bytes).ok());
                    if let (Some(key), Some(value)) = (text(key), decoded) {
                        data.insert(key, value);
                    }
                }
                for (key, value) in object["stringData"].as_mapping().into_iter().flatten() {
                    if let (Some(key), Some(value)) = (text(key), text(value)) {
                        data.insert(key, value);
                    }
                }
            }
            _ => continue,
        }
        found.insert(name_of(object), data);
    }
    found
}

/// One container of a Deployment or Job as podman can run it.
///
/// Changed, and why:
/// - `envFrom` and `env` from ConfigMaps and Secrets become plain values (the cluster's `env`
///   winning over `envFrom`, as there): podman 4.3 stores a `kind: Secret` wrongly, and this
///   keeps both kinds of source on one path. Values from the downward API (`fieldRef`: the pod's
///   name and namespace on spans) are dropped: there is no API server to give them.
/// - `image`: Emporium's becomes this run's build; every image is used as it is here, never
///   pulled (`imagePullPolicy: Never`): no registry can be reached, and the stand-ins are local.
/// - probes are dropped: podman ignores readiness and startup probes; the test makes them itself,
///   within the budget the manifest gives them ([`probe_budget`]).
/// - `resources` are dropped: podman would apply the limits through cgroups this machine's
///   layout does not delegate to it.
///
/// Kept as declared: the command and args, ports, the security context (user, group,
/// capabilities, no privilege escalation, read-only root), volume mounts.
fn runnable(
    container: &mut Value,
    sources: &BTreeMap<String, BTreeMap<String, String>>,
    image: &str,
) {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_sequence().into_iter().flatten() {
        for reference in ["configMapRef", "secretRef"] {
            if let Some(name) = source[reference]["name"].as_str() {
                // An optional source that does not exist gives nothing, as in a cluster.
                env.extend(sources.get(name).cloned().unwrap_or_default());
            }
        }
    }
    for variable in container["env"].as_sequence().into_iter().flatten() {
        let Some(name) = variable["name"].as_str() else {
            continue;
        };
        let from = &variable["valueFrom"];
        let value = if let Some(value) = variable["value"].as_str() {
            Some(value.to_owned())
        } else {
            ["secretKeyRef", "configMapKeyRef"]
                .iter()
                .find_map(|reference| {
                    let source = sources.get(from[*reference]["name"].as_str()?)?;
                    source.get(from[*reference]["key"].as_str()?).cloned()
                })
        };
        if let Some(value) = value {
            env.insert(name.to_owned(), value);
        }
    }
    let Value::Mapping(fields) = container else {
        return;
    };
    fields.remove("envFrom");
    fields.insert(
        "env".into(),
        Value::Sequence(
            env.into_iter()
                .map(|(name, value)| {
                    let mut entry = Mapping::new();
                    entry.insert("name".into(), name.into());
                    entry.insert("value".into(), value.into());
                    Value::Mapping(entry)
                })
                .collect(),
        ),
    );
    let is_ours = fields
        .get("image")
        .and_then(Value::as_str)
        .is_some_and(|i| i.starts_with("emporium"));
    if is_ours {
        fields.insert("image".into(), image.into());
    }
    fields.insert("imagePullPolicy".into(), "Never".into());
    for dropped in [
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "resources",
    ] {
        fields.remove(dropped);
    }
}

/// A Deployment's or Job's pod template as a bare Pod named like the workload's Service (a Job
/// by its component), which aardvark then resolves by that name on the network as a cluster's
/// DNS resolves the Service. Dropped with the workload: replicas, selectors, strategies (one pod
/// of each is run), and the service account (there is no API server, and none mounts a token).
/// Every pod runs once (`restartPolicy: Never`): a Job's exit code is the job's outcome, and a
/// Deployment's pod, which the kubelet would restart, would be restarted by podman within a
/// fraction of a second of exiting, hiding the exit code the SIGTERM check reads (and a crash).
fn bare_pod(
    workload: &Value,
    sources: &BTreeMap<String, BTreeMap<String, String>>,
    image: &str,
) -> Value {
    let template = &workload["spec"]["template"];
    let mut spec = template["spec"].clone();
    for list in ["containers", "initContainers"] {
        for container in spec[list].as_sequence_mut().into_iter().flatten() {
            runnable(container, sources, image);
        }
    }
    let name = if kind_of(workload) == "Job" {
        template["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap_or("job")
            .to_owned()
    } else {
        name_of(workload)
    };
    if let Value::Mapping(fields) = &mut spec {
        fields.remove("serviceAccountName");
        fields.remove("automountServiceAccountToken");
        fields.insert("restartPolicy".into(), "Never".into());
    }
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), name.into());
    metadata.insert("labels".into(), template["metadata"]["labels"].clone());
    let mut pod = Mapping::new();
    pod.insert("apiVersion".into(), "v1".into());
    pod.insert("kind".into(), "Pod".into());
    pod.insert("metadata".into(), Value::Mapping(metadata));
    pod.insert("spec".into(), spec);
    Value::Mapping(pod)
}

/// How long the kubelet would give a probe before it counts as failed for good: its initial
/// delay, then its period times its failure threshold (Kubernetes' defaults where unset).
fn probe_budget(probe: &Value) -> Duration {
    let field = |name: &str, default: u64| probe[name].as_u64().unwrap_or(default);
    Duration::from_secs(
        field("initialDelaySeconds", 0) + field("periodSeconds", 10) * field("failureThreshold", 3),
    )
}

/// Polls `url` as an HTTP probe does until it answers 2xx, within `budget`.
async fn probe(http: &reqwest::Client, url: &str, budget: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(url).timeout(Duration::from_secs(1)).send().await
            && response.status().is_success()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < budget,
            "{url} did not answer within its probes' budget of {budget:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for `container` to exit and gives its exit code, within `limit`.
async fn exit_code(podman: &Podman, container: &str, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let (status, code) = podman.state(container);
        if status == "exited" || status == "stopped" {
            return code;
        }
        if started.elapsed() >= limit {
            let logs = Command::new(&podman.program)
                .args(["logs", "--tail", "30", container])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stderr).into_owned()
                        + &String::from_utf8_lossy(&o.stdout)
                })
                .unwrap_or_default();
            let top = Command::new(&podman.program)
                .args(["top", container])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let signals = Command::new(&podman.program)
                .args([
                    "exec",
                    container,
                    "grep",
                    "-E",
                    "^(Sig|Shd)",
                    "/proc/1/status",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "{container} still {status} after {limit:?}; its processes:\n{top}\nits signals:\n{signals}\nits log ends:\n{logs}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_and_the_kind_overlays_and_the_charts_pods_run_and_serve_the_shop() {
    let binary = emporium_tests::emporium_binary();
    let kubectl = tool("EMPORIUM_TEST_KUBECTL");
    let overlay = must(&kubectl, &["kustomize", "k8s/overlays/kind"]);
    run_the_shop(&overlay, &binary).await;
    let helm = tool("EMPORIUM_TEST_HELM");
    let chart = must(
        &helm,
        &[
            "template",
            "emporium",
            "helm/emporium",
            "--namespace",
            "emporium",
        ],
    );
    run_the_shop(&chart, &binary).await;
}

/// Runs the pods of `rendered` manifests, with the image built around `binary`, and checks them.
async fn run_the_shop(rendered: &str, binary: &Path) {
    let mut podman = Podman::new();
    podman.build_image(binary);
    let objects = objects(rendered);
    let sources = sources(&objects);
    // Deployments by name, the setup Job (whose name the chart gives a revision) as `setup`.
    let workloads: BTreeMap<String, &Value> = objects
        .iter()
        .filter(|o| matches!(kind_of(o), "Deployment" | "Job"))
        .map(|o| {
            let name = if kind_of(o) == "Job" {
                "setup".to_owned()
            } else {
                name_of(o)
            };
            (name, o)
        })
        .collect();
    let image = podman.image.clone();
    let pod = |name: &str| bare_pod(workloads[name], &sources, &image);
    let http = reqwest::Client::new();

    // The backing services first, as the setup job waits for them in a cluster.
    for backing in ["localstack", "redis"] {
        let pod = pod(backing);
        podman.play(&pod);
    }
    let localstack = podman.address("localstack");
    probe(
        &http,
        &format!("http://{localstack}:4566/_localstack/health"),
        Duration::from_secs(60),
    )
    .await;

    // The setup job: `init` (an init container), then `seed`.
    let setup = pod("setup");
    let setup_name = name_of(&setup);
    podman.play(&setup);
    let code = exit_code(
        &podman,
        &Podman::container(&setup_name, "seed"),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(code, 0, "the setup job's seed exits 0");

    // Every service of the table, each within its probes' budget.
    for service in emporium::services::Service::ALL {
        let name = service.name();
        podman.play(&pod(name));
    }
    for service in emporium::services::Service::ALL {
        let name = service.name();
        let container = &workloads[name]["spec"]["template"]["spec"]["containers"][0];
        let address = podman.address(name);
        let port = service.spec().port;
        let startup =
            probe_budget(&container["startupProbe"]).max(probe_budget(&container["livenessProbe"]));
        probe(&http, &format!("http://{address}:{port}/healthz"), startup).await;
        let ready = probe_budget(&container["readinessProbe"]);
        probe(
            &http,
            &format!("http://{address}:{port}/readyz"),
            ready.max(Duration::from_secs(1)),
        )
        .await;
    }

    // Inside a service: user 10001, no capability left, a read-only root and a writable /tmp.
    let catalog = Podman::container("catalog", "catalog");
    let id = podman.exec(&catalog, &["id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), "10001");
    let gid = podman.exec(&catalog, &["id", "-g"]);
    assert_eq!(String::from_utf8_lossy(&gid.stdout).trim(), "10001");
    let status = podman.exec(&catalog, &["cat", "/proc/1/status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status
            .lines()
            .find(|line| line.starts_with(set))
            .unwrap_or_else(|| panic!("{set} in {status}"));
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(
        !podman
            .exec(&catalog, &["touch", "/root-is-read-only"])
            .status
            .success()
    );
    assert!(
        podman
            .exec(&catalog, &["touch", "/tmp/writable"])
            .status
            .success()
    );

    // The storefront's home page, with its images from the bucket the seed filled.
    let storefront = format!("http://{}:8080", podman.address("storefront"));
    let home = http
        .get(format!("{storefront}/"))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), 200);
    let page = home.text().await.expect("page");
    let image = page
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|src| src.starts_with("/assets/images/"))
        .expect("a product image on the home page")
        .to_owned();
    let picture = http
        .get(format!("{storefront}{image}"))
        .send()
        .await
        .expect("image");
    assert_eq!(picture.status(), 200, "{image}");

    // A short load through the storefront: no errors.
    let out = tempfile::tempdir().expect("tempdir");
    let result = out.path().join("load.json");
    let load = Command::new(binary)
        .args([
            "load",
            "--target",
            &storefront,
            "--users",
            "4",
            "--duration",
            "5s",
            "--quiet",
        ])
        .arg("--out")
        .arg(&result)
        .arg("--html")
        .arg(out.path().join("load.html"))
        .output()
        .expect("load runs");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result).expect("result")).expect("json");
    assert_eq!(report["errors"], 0, "{report}");

    // Told to stop, a service drains and exits 0 within its grace period.
    let grace = workloads["order"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let order = Podman::container("order", "order");
    podman.run(&["kill", "--signal", "TERM", &order]);
    let code = exit_code(&podman, &order, Duration::from_secs(grace)).await;
    assert_eq!(code, 0, "the order service exits 0 on SIGTERM");
}
