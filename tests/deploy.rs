//! The deployment artifacts, checked offline as a cluster would take them: the kustomize base
//! and kind overlay and the Helm chart (default, AWS and high-availability values) render, and
//! every rendered object passes `kubernetes-validate --strict` for two Kubernetes versions; the
//! chart lints strictly and its schema refuses wrong values; the chart and the kind overlay
//! declare the same workloads; the NetworkPolicies allow exactly the calls the design makes;
//! the Dockerfile and the test's Containerfiles pass hadolint and every script shellcheck.
//!
//! The tools come from `scripts/test.sh` (`install_validators`), through `EMPORIUM_TEST_*`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use emporium::services::Service;
use emporium_ports::faulty::Port;
use emporium_tests::manifests::{kind_of, must, name_of, objects, root, run, tool};
use serde_norway::Value;

/// Kubernetes versions every rendering is validated against.
const KUBERNETES_VERSIONS: &[&str] = &["1.31.0", "1.34.0"];

/// The services of the table, by name: the manifests and the chart must deploy each.
fn services() -> impl Iterator<Item = &'static str> {
    Service::ALL.iter().map(|s| s.name())
}

/// Every connection the design makes, from the table of services: each service to the
/// services it calls, to LocalStack (S3 and DynamoDB) when it has storage or blobs, to Redis
/// when it has a cache; and the setup job to LocalStack and to Redis (`seed` retires the
/// catalog's cached listings).
fn designed_calls() -> BTreeSet<(String, String, u64)> {
    let mut calls = BTreeSet::new();
    for service in Service::ALL {
        let (name, ports) = (service.name().to_owned(), service.spec().ports);
        for callee in service.calls() {
            calls.insert((
                name.clone(),
                callee.name().to_owned(),
                u64::from(callee.spec().port),
            ));
        }
        if [Port::Storage, Port::Blobs, Port::Events]
            .iter()
            .any(|port| ports.contains(port))
        {
            calls.insert((name.clone(), "localstack".into(), 4566));
        }
        if ports.contains(&Port::Cache) {
            calls.insert((name, "redis".into(), 6379));
        }
    }
    calls.insert(("setup".into(), "localstack".into(), 4566));
    calls.insert(("setup".into(), "redis".into(), 6379));
    calls
}

fn kustomize(dir: &str) -> String {
    must(&tool("EMPORIUM_TEST_KUBECTL"), &["kustomize", dir])
}

/// `helm template` of the chart with extra arguments (values files, `--set`).
fn helm_template(extra: &[&str]) -> Result<String, String> {
    helm_template_with(&tool("EMPORIUM_TEST_HELM"), extra)
}

/// Helm 4 and Helm 3, which many users still run: the chart must lint and render on both.
fn helms() -> [(&'static str, String); 2] {
    [
        ("helm4", tool("EMPORIUM_TEST_HELM")),
        ("helm3", tool("EMPORIUM_TEST_HELM3")),
    ]
}

fn helm_template_with(helm: &str, extra: &[&str]) -> Result<String, String> {
    let mut args = vec![
        "template",
        "demo",
        "helm/emporium",
        "--namespace",
        "emporium",
    ];
    args.extend_from_slice(extra);
    run(helm, &args)
}

/// Validates rendered manifests strictly against each Kubernetes version.
fn validate(name: &str, rendered: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, rendered).expect("write");
    let path = file.display().to_string();
    for version in KUBERNETES_VERSIONS {
        must(
            &tool("EMPORIUM_TEST_KUBERNETES_VALIDATE"),
            &["--strict", "-k", version, "--quiet", &path],
        );
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| kind_of(o) == kind && name_of(o) == name)
}

#[test]
fn the_kustomize_base_and_kind_overlay_render_valid_manifests() {
    for dir in ["k8s/base", "k8s/overlays/kind"] {
        let rendered = kustomize(dir);
        validate(&dir.replace('/', "-"), &rendered);
    }
    let kind = objects(&kustomize("k8s/overlays/kind"));
    for object in &kind {
        assert_eq!(
            object["metadata"]["namespace"].as_str(),
            if kind_of(object) == "Namespace" {
                None
            } else {
                Some("emporium")
            },
            "{} {}",
            kind_of(object),
            name_of(object)
        );
    }
    let storefront = find(&kind, "Service", "storefront").expect("storefront service");
    assert_eq!(storefront["spec"]["type"].as_str(), Some("NodePort"));
    for object in kind
        .iter()
        .filter(|o| matches!(kind_of(o), "Deployment" | "Job"))
    {
        let spec = &object["spec"]["template"]["spec"];
        let containers = spec["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .chain(spec["initContainers"].as_sequence().into_iter().flatten());
        for container in containers {
            let image = container["image"].as_str().unwrap_or_default();
            assert!(
                image == "emporium:dev"
                    || image == "localstack/localstack:4.14.0"
                    || image == "redis:7.4-alpine",
                "{}: image {image}",
                name_of(object)
            );
        }
    }
}

#[test]
fn the_kind_cluster_maps_the_storefront_node_port_to_localhost_8080() {
    let cluster: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("k8s/kind/cluster.yaml")).expect("read"),
    )
    .expect("YAML");
    assert_eq!(cluster["kind"].as_str(), Some("Cluster"));
    assert_eq!(
        cluster["apiVersion"].as_str(),
        Some("kind.x-k8s.io/v1alpha4")
    );
    let mapping = &cluster["nodes"][0]["extraPortMappings"][0];
    let kind = objects(&kustomize("k8s/overlays/kind"));
    let node_port =
        find(&kind, "Service", "storefront").expect("storefront")["spec"]["ports"][0]["nodePort"]
            .as_u64();
    assert_eq!(mapping["containerPort"].as_u64(), node_port);
    assert_eq!(mapping["hostPort"].as_u64(), Some(8080));
    let chart = objects(&helm_template(&[]).expect("render"));
    let chart_port = find(&chart, "Service", "storefront").expect("storefront")["spec"]["ports"][0]
        ["nodePort"]
        .as_u64();
    assert_eq!(
        chart_port, node_port,
        "the chart's default node port is the mapped one"
    );
}

fn values_file(name: &str) -> String {
    format!("helm/emporium/{name}")
}

#[test]
fn the_chart_lints_strictly_and_renders_valid_manifests_for_each_value_set() {
    let sets: [(&str, Vec<String>); 3] = [
        ("default", vec![]),
        ("aws", vec!["-f".into(), values_file("values-aws.yaml")]),
        ("ha", vec!["-f".into(), values_file("values-ha.yaml")]),
    ];
    for (name, extra) in &sets {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut renderings = Vec::new();
        for (version, helm) in helms() {
            let mut lint = vec![
                "lint",
                "--strict",
                "helm/emporium",
                "--kube-version",
                "1.31.0",
            ];
            lint.extend_from_slice(&extra);
            must(&helm, &lint);
            let rendered =
                helm_template_with(&helm, &extra).unwrap_or_else(|e| panic!("{version}: {e}"));
            validate(&format!("chart-{name}-{version}"), &rendered);
            renderings.push(objects(&rendered));
        }
        assert_eq!(
            renderings[0], renderings[1],
            "{name}: Helm 3 renders what Helm 4 does"
        );
    }

    // On AWS: no LocalStack, no in-cluster Redis, no static credentials; IAM roles on the
    // service accounts; ElastiCache as the cache; AWS's own endpoints.
    let aws = objects(&helm_template(&["-f", &values_file("values-aws.yaml")]).expect("render"));
    assert!(find(&aws, "Deployment", "localstack").is_none());
    assert!(find(&aws, "Deployment", "redis").is_none());
    assert!(find(&aws, "Secret", "emporium-aws").is_none());
    assert!(
        find(&aws, "Secret", "emporium-secrets").is_none(),
        "an existing secret is used"
    );
    let config = &find(&aws, "ConfigMap", "emporium-config").expect("config")["data"];
    assert!(config["AWS_ENDPOINT_URL"].is_null());
    assert!(
        config["REDIS_URL"]
            .as_str()
            .unwrap_or_default()
            .starts_with("rediss://")
    );
    for service in services().chain(["setup"]) {
        let account =
            find(&aws, "ServiceAccount", &format!("emporium-{service}")).expect("account");
        assert!(
            account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string(),
            "{service} has an IAM role"
        );
    }
    let storefront = find(&aws, "Service", "storefront").expect("storefront");
    assert_eq!(storefront["spec"]["type"].as_str(), Some("LoadBalancer"));
    // Shoppers are rate limited by their own address, which the load balancer keeps.
    assert_eq!(config["EMPORIUM_RATE_LIMIT"].as_str(), Some("50"));
    assert!(
        storefront["metadata"]["annotations"]
            ["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
            .as_str()
            .is_some_and(|a| a.contains("preserve_client_ip.enabled=true"))
    );
    // On kind, where every client comes from the node's address, there is no limit.
    for rendered in [
        kustomize("k8s/overlays/kind"),
        helm_template(&[]).expect("render"),
    ] {
        let objects = objects(&rendered);
        let config = &find(&objects, "ConfigMap", "emporium-config").expect("config")["data"];
        assert_eq!(config["EMPORIUM_RATE_LIMIT"].as_str(), Some("0"));
    }

    // High availability: two pods at least, autoscaling to eight.
    let ha = objects(&helm_template(&["-f", &values_file("values-ha.yaml")]).expect("render"));
    for service in services() {
        let hpa = find(&ha, "HorizontalPodAutoscaler", service).expect("hpa");
        assert_eq!(hpa["spec"]["minReplicas"].as_u64(), Some(2));
        assert_eq!(hpa["spec"]["maxReplicas"].as_u64(), Some(8));
        assert!(find(&ha, "PodDisruptionBudget", service).is_some());
    }
    // Without autoscaling, the replicas are the chart's.
    let fixed = objects(
        &helm_template(&[
            "--set",
            "autoscaling.enabled=false",
            "--set",
            "services.cart.replicas=3",
        ])
        .expect("render"),
    );
    assert!(find(&fixed, "HorizontalPodAutoscaler", "cart").is_none());
    assert_eq!(
        find(&fixed, "Deployment", "cart").expect("cart")["spec"]["replicas"].as_u64(),
        Some(3)
    );
}

#[test]
fn the_chart_schema_refuses_wrong_values() {
    for wrong in [
        "image.pullPolicy=Sometimes",
        "services.catalog.port=0",
        "services.order.port=70000",
        "services.cart.replicas=-1",
        "secrets.sessionKey=too-short",
        "storefront.service.type=Ingress",
        "storefront.service.nodePort=8080",
        "settings.storage=postgres://db",
        "settings.logFormat=xml",
        "redis.url=http://cache:6379",
        "aws.region=mars",
        "autoscaling.targetCPUUtilizationPercentage=150",
        "services.catalog.resources.limits.memory=lots",
        "unknownSetting=1",
        "localstack.enabled=maybe",
        "metrics.scrape=maybe",
        "metrics.scraperPodLabels.app=7",
        "tracing.enabled=sometimes",
        "tracing.sampleRatio=2",
        "tracing.jaeger.maxTraces=0",
        "tracing.export.endpoint=https://otlp.example.com/v1/traces",
        "tracing.collector.memoryLimitMiB=1",
        "metrics.serviceMonitor.interval=often",
        "monitoring.enabled=yes",
        "monitoring.prometheus.retention=forever",
        "monitoring.grafana.adminPassword=short",
        "storefront.rateLimit.perSecond=-1",
        "storefront.rateLimit.trustForwarded=maybe",
    ] {
        let outcome = helm_template(&["--set", wrong]);
        let error = outcome.expect_err(&format!("{wrong} was accepted"));
        assert!(
            error.contains("don't meet the specifications of the schema"),
            "{wrong}: {error}"
        );
    }
    // And right values pass.
    helm_template(&[
        "--set",
        "services.catalog.port=9081",
        "--set",
        "aws.region=eu-west-1",
    ])
    .expect("valid values render");
}

/// What a workload declares that must not drift between the chart and the manifests.
fn workloads(objects: &[Value]) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    for object in objects {
        let kind = kind_of(object);
        let mut name = name_of(object);
        match kind {
            "Deployment" | "Job" => {
                if kind == "Job" {
                    // The chart gives each release revision its own Job.
                    name = name
                        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                        .to_owned();
                }
                let spec = &object["spec"]["template"]["spec"];
                let containers = |key: &str| -> Vec<Value> {
                    spec[key]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            let mut kept = serde_norway::Mapping::new();
                            for field in [
                                "name",
                                "args",
                                "ports",
                                "startupProbe",
                                "readinessProbe",
                                "livenessProbe",
                                "securityContext",
                                "resources",
                                "volumeMounts",
                            ] {
                                kept.insert(field.into(), c[field].clone());
                            }
                            Value::Mapping(kept)
                        })
                        .collect()
                };
                let mut kept = serde_norway::Mapping::new();
                kept.insert("podSecurityContext".into(), spec["securityContext"].clone());
                kept.insert(
                    "serviceAccountName".into(),
                    spec["serviceAccountName"].clone(),
                );
                kept.insert(
                    "containers".into(),
                    Value::Sequence(containers("containers")),
                );
                kept.insert(
                    "initContainers".into(),
                    Value::Sequence(containers("initContainers")),
                );
                kept.insert("volumes".into(), spec["volumes"].clone());
                found.insert(format!("{kind}/{name}"), Value::Mapping(kept));
            }
            "Service" => {
                found.insert(format!("Service/{name}"), object["spec"].clone());
            }
            "NetworkPolicy" | "HorizontalPodAutoscaler" | "PodDisruptionBudget"
                if name != "helm-test" =>
            {
                found.insert(format!("{kind}/{name}"), object["spec"].clone());
            }
            _ => {}
        }
    }
    found
}

#[test]
fn the_chart_and_the_kind_overlay_declare_the_same_workloads() {
    let chart = workloads(&objects(&helm_template(&[]).expect("render")));
    let manifests = workloads(&objects(&kustomize("k8s/overlays/kind")));
    let chart_names: BTreeSet<&String> = chart.keys().collect();
    let manifest_names: BTreeSet<&String> = manifests.keys().collect();
    assert_eq!(chart_names, manifest_names, "the same objects");
    // Compared as JSON values, whose objects ignore key order (kustomize sorts keys).
    let json = |value: &Value| serde_json::to_value(value).expect("JSON-compatible YAML");
    for (name, declared) in &manifests {
        assert_eq!(
            json(&chart[name]),
            json(declared),
            "{name} differs between helm/emporium and k8s/"
        );
    }
}

#[test]
fn the_manifests_and_the_chart_deploy_exactly_the_table_of_services() {
    for (source, rendered) in [
        ("k8s/", kustomize("k8s/overlays/kind")),
        ("helm/emporium", helm_template(&[]).expect("render")),
    ] {
        let objects = objects(&rendered);
        // Every Deployment that runs the binary's `serve` is one service of the table.
        let served: BTreeSet<String> = objects
            .iter()
            .filter(|o| kind_of(o) == "Deployment")
            .filter_map(|o| {
                let args = &o["spec"]["template"]["spec"]["containers"][0]["args"];
                (args[0].as_str() == Some("serve")).then(|| name_of(o))
            })
            .collect();
        let table: BTreeSet<String> = services().map(str::to_owned).collect();
        assert_eq!(served, table, "{source}: the services deployed");
        let config = &find(&objects, "ConfigMap", "emporium-config").expect("config")["data"];
        for service in Service::ALL {
            let (name, port) = (service.name(), u64::from(service.spec().port));
            let container = &find(&objects, "Deployment", name).expect("deployment")["spec"]["template"]
                ["spec"]["containers"][0];
            assert_eq!(
                container["args"],
                Value::Sequence(vec!["serve".into(), name.into()]),
                "{source}: {name} serves itself"
            );
            assert_eq!(
                container["ports"][0]["containerPort"].as_u64(),
                Some(port),
                "{source}: {name} listens on the table's port"
            );
            assert_eq!(
                service_port(&objects, name, "http"),
                port,
                "{source}: {name}"
            );
            // Its callers find it at its Service, on its port.
            let variable = format!("EMPORIUM_{}_URL", name.to_ascii_uppercase());
            let expected = service.is_called().then(|| format!("http://{name}:{port}"));
            assert_eq!(
                config[variable.as_str()].as_str().map(str::to_owned),
                expected,
                "{source}: {variable}"
            );
        }
    }
}

#[test]
fn autoscaled_deployments_leave_replicas_to_the_autoscaler_and_probes_outwait_the_checks() {
    let check_secs = emporium_platform::health::CHECK_TIMEOUT.as_secs();
    for (source, rendered) in [
        ("k8s/", kustomize("k8s/overlays/kind")),
        ("helm/emporium", helm_template(&[]).expect("render")),
    ] {
        let objects = objects(&rendered);
        let scaled: Vec<String> = objects
            .iter()
            .filter(|o| kind_of(o) == "HorizontalPodAutoscaler")
            .map(|hpa| {
                hpa["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .expect("a target")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            scaled.len(),
            Service::ALL.len(),
            "{source}: every service scales"
        );
        for name in &scaled {
            // A count would scale the Deployment back to it on every apply.
            let deployment = find(&objects, "Deployment", name).expect("deployment");
            assert!(
                deployment["spec"]["replicas"].is_null(),
                "{source}: {name} declares replicas its autoscaler owns"
            );
        }
        for deployment in objects.iter().filter(|o| kind_of(o) == "Deployment") {
            let containers = &deployment["spec"]["template"]["spec"]["containers"];
            for container in containers.as_sequence().into_iter().flatten() {
                let probe = &container["readinessProbe"];
                if probe["httpGet"]["path"].as_str() == Some("/readyz") {
                    let timeout = probe["timeoutSeconds"].as_u64().unwrap_or(1);
                    assert!(
                        timeout > check_secs,
                        "{source}: {}'s readiness probe gives up ({timeout} s) before /readyz's checks ({check_secs} s)",
                        name_of(deployment)
                    );
                }
            }
        }
    }
}

#[test]
fn the_image_runs_as_user_and_group_10001() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // The group too: `useradd --system` alone gives the user a system group of another id.
    assert!(dockerfile.contains("groupadd --system --gid 10001 emporium"));
    assert!(dockerfile.contains("useradd --system --uid 10001 --gid 10001"));
    assert!(dockerfile.contains("USER 10001:10001"));
}

/// Whether a policy peer is the metrics scraper: Prometheus's pods, of the release's namespace
/// or of one named by labels (never of any namespace).
fn is_scraper(peer: &Value) -> bool {
    let namespaces = &peer["namespaceSelector"];
    (namespaces.is_null() || !namespaces["matchLabels"].is_null())
        && peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str()
            == Some("prometheus")
}

/// Which component may open a connection to which, and on what port, by the policies (the
/// metrics scraper aside: see `the_pods_are_scraped_and_only_the_scraper_comes_from_outside`).
fn allowed_calls(objects: &[Value]) -> BTreeSet<(String, String, u64)> {
    let component = |selector: &Value| -> Option<String> {
        selector["matchLabels"]["app.kubernetes.io/component"]
            .as_str()
            .map(str::to_owned)
    };
    let policies: Vec<&Value> = objects
        .iter()
        .filter(|o| kind_of(o) == "NetworkPolicy")
        .collect();
    let mut egress: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let mut ingress: BTreeSet<(String, String, u64)> = BTreeSet::new();
    for policy in &policies {
        let Some(owner) = component(&policy["spec"]["podSelector"]) else {
            continue;
        };
        for rule in policy["spec"]["egress"].as_sequence().into_iter().flatten() {
            for peer in rule["to"].as_sequence().into_iter().flatten() {
                if let Some(target) = component(&peer["podSelector"]) {
                    for port in rule["ports"].as_sequence().into_iter().flatten() {
                        egress.insert((
                            owner.clone(),
                            target.clone(),
                            port["port"].as_u64().unwrap_or(0),
                        ));
                    }
                }
            }
        }
        for rule in policy["spec"]["ingress"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let ports: Vec<u64> = rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            match rule["from"].as_sequence() {
                None => {
                    for port in &ports {
                        ingress.insert(("*".into(), owner.clone(), *port));
                    }
                }
                Some(peers) => {
                    for peer in peers.iter().filter(|peer| !is_scraper(peer)) {
                        let source =
                            component(&peer["podSelector"]).unwrap_or_else(|| "emporium".into());
                        for port in &ports {
                            ingress.insert((source.clone(), owner.clone(), *port));
                        }
                    }
                }
            }
        }
    }
    // A call goes through when the caller may send it and the callee may take it.
    egress
        .into_iter()
        .filter(|(from, to, port)| {
            ingress.contains(&(from.clone(), to.clone(), *port))
                || ingress.contains(&("*".into(), to.clone(), *port))
                || ingress.contains(&("emporium".into(), to.clone(), *port))
        })
        .collect()
}

#[test]
fn network_policies_allow_exactly_the_calls_the_design_makes() {
    let design = designed_calls();
    let manifests = objects(&kustomize("k8s/overlays/kind"));
    assert_eq!(allowed_calls(&manifests), design, "k8s/");
    let chart = objects(&helm_template(&[]).expect("render"));
    let mut with_test = design.clone();
    with_test.insert(("helm-test".into(), "storefront".into(), 8080));
    assert_eq!(allowed_calls(&chart), with_test, "helm/emporium");
    // With traces in the cluster, every service and the setup job also send spans to the
    // collector, which sends them to Jaeger.
    let mut traced = design.clone();
    for sender in services().chain(["setup"]) {
        traced.insert((sender.into(), "otel-collector".into(), 4318));
    }
    traced.insert(("otel-collector".into(), "jaeger".into(), 4317));
    traced.insert(("grafana".into(), "prometheus".into(), 9090));
    let [(_, traced_manifests), (_, traced_chart)] = with_observability();
    let (traced_manifests, traced_chart) = (objects(&traced_manifests), objects(&traced_chart));
    assert_eq!(
        allowed_calls(&traced_manifests),
        traced,
        "k8s/ with tracing"
    );
    traced.insert(("helm-test".into(), "storefront".into(), 8080));
    assert_eq!(
        allowed_calls(&traced_chart),
        traced,
        "helm/emporium with tracing"
    );
    // Everything else is denied: a default-deny policy selects every pod, both ways; only the
    // storefront takes connections from anywhere, and every other peer is one of ours.
    for objects in [&manifests, &chart, &traced_manifests, &traced_chart] {
        for policy in objects.iter().filter(|o| kind_of(o) == "NetworkPolicy") {
            for rule in policy["spec"]["ingress"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                match rule["from"].as_sequence() {
                    None => assert_eq!(name_of(policy), "storefront", "open ingress"),
                    Some(peers) => {
                        for peer in peers.iter().filter(|peer| !is_scraper(peer)) {
                            // Emporium's pods, or the release's own Prometheus and Grafana.
                            let name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                                .as_str()
                                .unwrap_or_default();
                            assert!(
                                ["emporium", "prometheus", "grafana"].contains(&name),
                                "{}: a peer outside Emporium",
                                name_of(policy)
                            );
                            assert!(
                                peer["namespaceSelector"].is_null() && peer["ipBlock"].is_null()
                            );
                        }
                    }
                }
            }
        }
        let deny = find(objects, "NetworkPolicy", "default-deny").expect("default deny");
        assert_eq!(
            deny["spec"]["podSelector"],
            Value::Mapping(Default::default())
        );
        assert_eq!(
            deny["spec"]["policyTypes"].as_sequence().map(Vec::len),
            Some(2)
        );
        assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());
    }
}

#[test]
fn the_pods_are_scraped_and_only_the_scraper_comes_from_outside() {
    let ports: Vec<(&str, u16)> = Service::ALL
        .iter()
        .map(|s| (s.name(), s.spec().port))
        .collect();
    for (source, rendered) in [
        ("k8s/", kustomize("k8s/overlays/kind")),
        ("helm/emporium", helm_template(&[]).expect("render")),
    ] {
        let objects = objects(&rendered);
        for &(name, port) in &ports {
            let deployment = find(&objects, "Deployment", name).expect("deployment");
            let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
            let port = port.to_string();
            for (key, value) in [
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", port.as_str()),
                ("prometheus.io/path", "/metrics"),
            ] {
                assert_eq!(
                    annotations[key].as_str(),
                    Some(value),
                    "{source}: {name} {key}"
                );
            }
            // The scraper reaches each service's own port and nothing else; the storefront's
            // port is open to all anyway.
            let policy = find(&objects, "NetworkPolicy", name).expect("policy");
            let scraped: Vec<u64> = policy["spec"]["ingress"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter(|rule| {
                    rule["from"]
                        .as_sequence()
                        .is_some_and(|peers| peers.iter().any(is_scraper))
                })
                .flat_map(|rule| {
                    assert!(
                        rule["from"].as_sequence().is_some_and(|p| p.len() == 1),
                        "{source}: {name}: the scraper's rule admits only it"
                    );
                    rule["ports"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["port"].as_u64())
                        .collect::<Vec<_>>()
                })
                .collect();
            let expected: Vec<u64> = if name == "storefront" {
                Vec::new()
            } else {
                vec![port.parse().expect("port")]
            };
            assert_eq!(scraped, expected, "{source}: {name}");
        }
    }
    // Only a scraper of the release's namespace, unless the values name another one.
    for (source, rendered) in [
        ("k8s/", kustomize("k8s/overlays/kind")),
        ("helm/emporium", helm_template(&[]).expect("render")),
    ] {
        let objects = objects(&rendered);
        for (name, _) in ports.iter().filter(|(name, _)| *name != "storefront") {
            let policy = find(&objects, "NetworkPolicy", name).expect("policy");
            for rule in policy["spec"]["ingress"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                for peer in rule["from"].as_sequence().into_iter().flatten() {
                    assert!(
                        peer["namespaceSelector"].is_null(),
                        "{source}: {name} admits a peer of another namespace: {peer:?}"
                    );
                }
            }
        }
    }
    let elsewhere = objects(
        &helm_template(&[
            "--set",
            "metrics.scraperNamespaceLabels.kubernetes\\.io/metadata\\.name=monitoring",
        ])
        .expect("render"),
    );
    let policy = find(&elsewhere, "NetworkPolicy", "catalog").expect("policy");
    let scraper = policy["spec"]["ingress"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["from"].as_sequence().into_iter().flatten())
        .find(|peer| is_scraper(peer))
        .expect("the scraper's peer");
    assert_eq!(
        scraper["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str(),
        Some("monitoring")
    );
    // Turned off, neither the annotations nor the opening remain.
    let off = objects(&helm_template(&["--set", "metrics.scrape=false"]).expect("render"));
    let catalog = find(&off, "Deployment", "catalog").expect("deployment");
    assert!(
        catalog["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].is_null()
    );
    let policy = find(&off, "NetworkPolicy", "catalog").expect("policy");
    assert_eq!(
        policy["spec"]["ingress"].as_sequence().map(Vec::len),
        Some(1)
    );
}

#[test]
fn the_chart_ships_the_grafana_dashboard_when_asked() {
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../helm/emporium/dashboards/emporium.json"
        ))
        .expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    assert!(
        find(
            &objects(&helm_template(&[]).expect("render")),
            "ConfigMap",
            "emporium-dashboard"
        )
        .is_none()
    );
    let text = helm_template(&["--set", "metrics.grafanaDashboard=true"]).expect("render");
    validate("dashboard", &text);
    let rendered = objects(&text);
    let config = find(&rendered, "ConfigMap", "emporium-dashboard").expect("the dashboard");
    assert_eq!(
        config["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let shipped: serde_json::Value =
        serde_json::from_str(config["data"]["emporium.json"].as_str().expect("data"))
            .expect("JSON");
    assert_eq!(shipped, file);
    // The chart carries its own copy (a chart must not reach outside its folder: packaged or
    // copied elsewhere, a link would break), the same as the kustomize component's.
    let chart_copy = root().join("helm/emporium/dashboards/emporium.json");
    assert!(
        !std::fs::symlink_metadata(&chart_copy)
            .expect("the chart's dashboard")
            .file_type()
            .is_symlink(),
        "a real file"
    );
    assert_eq!(
        std::fs::read(&chart_copy).expect("the chart's dashboard"),
        std::fs::read(root().join("k8s/components/monitoring/emporium.json"))
            .expect("the component's dashboard"),
        "the chart's dashboard is the kustomize component's: copy it over after changing one"
    );
}

/// The renderings with traces and metrics in the cluster: the kind overlay with the tracing and
/// monitoring components, and the chart with `tracing.enabled` and `monitoring.enabled`.
fn with_observability() -> [(&'static str, String); 2] {
    [
        ("k8s/", kustomize("k8s/overlays/kind-observability")),
        (
            "helm/emporium",
            helm_template(&[
                "--set",
                "tracing.enabled=true",
                "--set",
                "monitoring.enabled=true",
            ])
            .expect("render"),
        ),
    ]
}

/// A ConfigMap's file, parsed.
fn config_file(objects: &[Value], name: &str, file: &str) -> Value {
    let map = find(objects, "ConfigMap", name).unwrap_or_else(|| panic!("ConfigMap {name}"));
    serde_norway::from_str(map["data"][file].as_str().expect("file")).expect("YAML")
}

fn service_port(objects: &[Value], service: &str, port: &str) -> u64 {
    let service = find(objects, "Service", service).unwrap_or_else(|| panic!("Service {service}"));
    service["spec"]["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(port))
        .and_then(|p| p["port"].as_u64())
        .unwrap_or_else(|| panic!("port {port}"))
}

#[test]
fn the_tracing_component_and_values_run_a_collector_and_jaeger_wired_to_the_services() {
    // The components are checked against the chart here as a whole: workloads, policies and
    // the configuration files of the collector, Jaeger, Prometheus and Grafana.
    let [(_, manifests), (_, chart)] = with_observability();
    validate("kind-observability", &manifests);
    validate("chart-observability", &chart);
    let exported = helm_template(&[
        "--set",
        "tracing.enabled=true",
        "--set",
        "tracing.jaeger.enabled=false",
        "--set",
        "tracing.export.endpoint=otlp.example.com:4317",
    ])
    .expect("render");
    validate("chart-tracing-export", &exported);

    let (manifests, chart) = (objects(&manifests), objects(&chart));
    for object in &manifests {
        if kind_of(object) != "Namespace" {
            assert_eq!(
                object["metadata"]["namespace"].as_str(),
                Some("emporium"),
                "{} {}",
                kind_of(object),
                name_of(object)
            );
        }
    }
    // The chart and the components declare the same workloads, policies and configuration.
    let json = |value: &Value| serde_json::to_value(value).expect("JSON-compatible YAML");
    let (ours, theirs) = (workloads(&chart), workloads(&manifests));
    assert!(
        theirs.contains_key("Deployment/otel-collector")
            && theirs.contains_key("Deployment/grafana")
    );
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, declared) in &theirs {
        assert_eq!(json(&ours[name]), json(declared), "{name} differs");
    }
    for (map, file) in [
        ("otel-collector", "collector.yaml"),
        ("jaeger", "jaeger.yaml"),
        ("prometheus", "prometheus.yml"),
        ("grafana-provisioning", "datasources.yaml"),
        ("grafana-provisioning", "dashboards.yaml"),
    ] {
        assert_eq!(
            json(&config_file(&chart, map, file)),
            json(&config_file(&manifests, map, file)),
            "{map} {file}"
        );
    }

    for (source, objects) in [("k8s/", &manifests), ("helm/emporium", &chart)] {
        // The services send to the collector's OTLP/HTTP port...
        let config = &find(objects, "ConfigMap", "emporium-config").expect("config")["data"];
        let endpoint = format!(
            "http://otel-collector:{}",
            service_port(objects, "otel-collector", "otlp-http")
        );
        assert_eq!(
            config["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(),
            Some(endpoint.as_str()),
            "{source}"
        );
        // Each service's own sampler decides (10 new traces a second, then 1%) unless a ratio
        // is set.
        assert!(config["OTEL_TRACES_SAMPLER"].is_null(), "{source}");
        // ...where the collector listens, and it sends them to where Jaeger listens.
        let collector = config_file(objects, "otel-collector", "collector.yaml");
        assert_eq!(
            collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].as_str(),
            Some("0.0.0.0:4318")
        );
        let exporters = &collector["service"]["pipelines"]["traces"]["exporters"];
        assert_eq!(
            exporters.as_sequence().map(Vec::len),
            Some(1),
            "{source}: {exporters:?}"
        );
        let jaeger_port = service_port(objects, "jaeger", "otlp-grpc");
        assert_eq!(
            collector["exporters"]["otlp/jaeger"]["endpoint"].as_str(),
            Some(format!("jaeger:{jaeger_port}").as_str())
        );
        let jaeger = config_file(objects, "jaeger", "jaeger.yaml");
        assert_eq!(
            jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
            Some(format!("0.0.0.0:{jaeger_port}").as_str())
        );
        assert_eq!(
            jaeger["exporters"]["jaeger_storage_exporter"]["trace_storage"],
            jaeger["extensions"]["jaeger_query"]["storage"]["traces"],
            "{source}: Jaeger shows what it stores"
        );
        for (deployment, config) in [
            ("otel-collector", "/conf/collector.yaml"),
            ("jaeger", "/conf/jaeger.yaml"),
        ] {
            let container = &find(objects, "Deployment", deployment).expect("deployment")["spec"]["template"]
                ["spec"]["containers"][0];
            assert_eq!(
                container["args"][0].as_str(),
                Some(format!("--config={config}").as_str()),
                "{source}: {deployment} reads the mounted file"
            );
        }
        // Each pod says who it is on its spans.
        for service in services() {
            let env = &find(objects, "Deployment", service).expect("deployment")["spec"]["template"]
                ["spec"]["containers"][0]["env"];
            let attributes = env
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|v| v["name"].as_str() == Some("OTEL_RESOURCE_ATTRIBUTES"))
                .and_then(|v| v["value"].as_str())
                .unwrap_or_else(|| panic!("{source}: {service} names its pod"));
            assert!(
                attributes.contains("k8s.pod.name=$(POD_NAME)"),
                "{attributes}"
            );
        }
    }

    // A ratio set is the standard variables' ratio.
    let ratio = objects(
        &helm_template(&[
            "--set",
            "tracing.enabled=true",
            // (`--set` would pass 0.25 as a string: Helm types only integers there.)
            "--set-json",
            "tracing.sampleRatio=0.25",
        ])
        .expect("render"),
    );
    let config = &find(&ratio, "ConfigMap", "emporium-config").expect("config")["data"];
    assert_eq!(
        config["OTEL_TRACES_SAMPLER"].as_str(),
        Some("parentbased_traceidratio")
    );
    assert_eq!(config["OTEL_TRACES_SAMPLER_ARG"].as_str(), Some("0.25"));

    // With Jaeger off, the traces go to the named endpoint, which the collector may reach.
    let exported = objects(&exported);
    assert!(find(&exported, "Deployment", "jaeger").is_none());
    let collector = config_file(&exported, "otel-collector", "collector.yaml");
    assert_eq!(
        collector["exporters"]["otlp/export"]["endpoint"].as_str(),
        Some("otlp.example.com:4317")
    );
    assert_eq!(
        collector["service"]["pipelines"]["traces"]["exporters"][0].as_str(),
        Some("otlp/export")
    );
    let policy = find(&exported, "NetworkPolicy", "otel-collector").expect("policy");
    assert_eq!(
        policy["spec"]["egress"][0]["ports"][0]["port"].as_u64(),
        Some(4317)
    );
    // Off by default; on without anywhere to send, refused.
    let default = objects(&helm_template(&[]).expect("render"));
    assert!(find(&default, "Deployment", "otel-collector").is_none());
    let config = &find(&default, "ConfigMap", "emporium-config").expect("config")["data"];
    assert!(config["OTEL_EXPORTER_OTLP_ENDPOINT"].is_null());
    let nowhere = helm_template(&[
        "--set",
        "tracing.enabled=true",
        "--set",
        "tracing.jaeger.enabled=false",
    ])
    .expect_err("no backend");
    assert!(nowhere.contains("nowhere to send traces"), "{nowhere}");
}

#[test]
fn the_monitoring_component_and_values_run_prometheus_and_grafana_on_the_dashboard() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("k8s/components/monitoring/emporium.json"))
            .expect("dashboard"),
    )
    .expect("JSON");
    // (That the chart and the component agree on these files is checked with the tracing.)
    let [(_, manifests), (_, chart)] = with_observability();
    let (manifests, chart) = (objects(&manifests), objects(&chart));
    for (source, objects) in [("k8s/", &manifests), ("helm/emporium", &chart)] {
        // Prometheus keeps the pods that ask to be scraped, at their annotated port and path...
        let prometheus = config_file(objects, "prometheus", "prometheus.yml");
        let job = &prometheus["scrape_configs"][0];
        assert_eq!(
            job["kubernetes_sd_configs"][0]["role"].as_str(),
            Some("pod")
        );
        let relabels = job["relabel_configs"].as_sequence().expect("relabels");
        let keep = relabels
            .iter()
            .find(|r| r["action"].as_str() == Some("keep"))
            .expect("a keep rule");
        assert_eq!(
            keep["source_labels"][0].as_str(),
            Some("__meta_kubernetes_pod_annotation_prometheus_io_scrape")
        );
        for target in ["__metrics_path__", "__address__", "service"] {
            assert!(
                relabels
                    .iter()
                    .any(|r| r["target_label"].as_str() == Some(target)),
                "{source}: {target}"
            );
        }
        // ...may list them, and is a pod the services' policies admit as the scraper.
        let deployment = find(objects, "Deployment", "prometheus").expect("prometheus");
        let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .expect("account");
        let binding = find(objects, "RoleBinding", "prometheus").expect("binding");
        assert_eq!(binding["subjects"][0]["name"].as_str(), Some(account));
        assert_eq!(
            binding["subjects"][0]["namespace"].as_str(),
            Some("emporium")
        );
        let role = find(
            objects,
            "Role",
            binding["roleRef"]["name"].as_str().expect("role"),
        )
        .expect("role");
        let rule = &role["rules"][0];
        assert_eq!(rule["resources"][0].as_str(), Some("pods"));
        for verb in ["list", "watch"] {
            assert!(
                rule["verbs"]
                    .as_sequence()
                    .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(verb))),
                "{source}: {verb}"
            );
        }
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let catalog_policy = find(objects, "NetworkPolicy", "catalog").expect("policy");
        let scraper = catalog_policy["spec"]["ingress"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|rule| rule["from"].as_sequence().into_iter().flatten())
            .find(|peer| is_scraper(peer))
            .expect("the scraper's rule");
        for (key, value) in scraper["podSelector"]["matchLabels"]
            .as_mapping()
            .expect("labels")
        {
            assert_eq!(&labels[key.as_str().expect("key")], value, "{source}");
        }
        // Its own policy lets it reach every service's port.
        let egress = &find(objects, "NetworkPolicy", "prometheus").expect("policy")["spec"]["egress"]
            [0]["ports"][0];
        let (low, high) = (
            egress["port"].as_u64().expect("port"),
            egress["endPort"].as_u64().expect("endPort"),
        );
        for port in 8080..=8084 {
            assert!((low..=high).contains(&port), "{source}: {port}");
        }
        // Grafana's data source is that Prometheus, and its dashboards are the mounted file.
        let datasources = config_file(objects, "grafana-provisioning", "datasources.yaml");
        assert_eq!(
            datasources["datasources"][0]["url"].as_str(),
            Some(
                format!(
                    "http://prometheus:{}",
                    service_port(objects, "prometheus", "http")
                )
                .as_str()
            )
        );
        assert_eq!(
            datasources["datasources"][0]["isDefault"].as_bool(),
            Some(true)
        );
        let providers = config_file(objects, "grafana-provisioning", "dashboards.yaml");
        let path = providers["providers"][0]["options"]["path"]
            .as_str()
            .expect("path");
        let pod =
            &find(objects, "Deployment", "grafana").expect("grafana")["spec"]["template"]["spec"];
        let mount = pod["containers"][0]["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("{source}: nothing mounted at {path}"));
        let volume = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .expect("volume");
        let map = volume["configMap"]["name"].as_str().expect("a ConfigMap");
        let shipped: serde_json::Value = serde_json::from_str(
            find(objects, "ConfigMap", map).expect("the dashboard")["data"]["emporium.json"]
                .as_str()
                .expect("emporium.json"),
        )
        .expect("JSON");
        assert_eq!(shipped, dashboard, "{source}");
        let home = pod["containers"][0]["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str() == Some("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"))
            .and_then(|v| v["value"].as_str())
            .expect("home dashboard");
        assert_eq!(home, format!("{path}/emporium.json"), "{source}");
        for item in volume_items(pod, "provisioning") {
            assert!(
                item.starts_with("datasources/") || item.starts_with("dashboards/"),
                "{source}: {item}"
            );
        }
    }
    // The chart's dashboard is the component's file.
    let chart_file = std::fs::read(root().join("helm/emporium/dashboards/emporium.json"))
        .expect("the chart's dashboard");
    let component_file = std::fs::read(root().join("k8s/components/monitoring/emporium.json"))
        .expect("the component's dashboard");
    assert_eq!(chart_file, component_file);
    // Off by default.
    let default = objects(&helm_template(&[]).expect("render"));
    assert!(find(&default, "Deployment", "prometheus").is_none());
    assert!(find(&default, "Deployment", "grafana").is_none());
}

/// The paths a pod's ConfigMap volume projects its keys to.
fn volume_items(pod: &Value, volume: &str) -> Vec<String> {
    pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|v| v["name"].as_str() == Some(volume))
        .flat_map(|v| v["configMap"]["items"].as_sequence().into_iter().flatten())
        .filter_map(|item| item["path"].as_str().map(str::to_owned))
        .collect()
}

/// Whether a label selector (matchLabels and `In` expressions) selects these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    let labels_match = selector["matchLabels"]
        .as_mapping()
        .into_iter()
        .flatten()
        .all(|(key, value)| &labels[key.as_str().unwrap_or_default()] == value);
    let expressions_match = selector["matchExpressions"]
        .as_sequence()
        .into_iter()
        .flatten()
        .all(|expression| {
            assert_eq!(expression["operator"].as_str(), Some("In"));
            let value = &labels[expression["key"].as_str().unwrap_or_default()];
            expression["values"]
                .as_sequence()
                .is_some_and(|values| values.contains(value))
        });
    labels_match && expressions_match
}

#[test]
fn the_service_monitor_selects_exactly_the_five_services_on_their_metrics_port() {
    let rendered = helm_template(&[
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
    ])
    .expect("render");
    // kubernetes-validate knows no custom resources: the rest is validated, the
    // ServiceMonitor is checked below against what it must select.
    // (Split as text: written out again, YAML 1.1 readers would take Redis's "no" for false.)
    let rest: Vec<&str> = rendered
        .split("\n---")
        .filter(|document| !document.contains("\nkind: ServiceMonitor"))
        .collect();
    validate("chart-service-monitor", &rest.join("\n---"));
    let monitors: Vec<Value> = objects(&rendered)
        .into_iter()
        .filter(|o| kind_of(o) == "ServiceMonitor")
        .collect();
    let all = objects(&rendered);
    assert_eq!(monitors.len(), 1);
    let monitor = &monitors[0];
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(
        monitor["metadata"]["labels"]["release"].as_str(),
        Some("kube-prometheus-stack")
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"][0].as_str(),
        Some("emporium")
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    let selected: BTreeSet<String> = all
        .iter()
        .filter(|o| kind_of(o) == "Service")
        .filter(|o| selects(&monitor["spec"]["selector"], &o["metadata"]["labels"]))
        .map(name_of)
        .collect();
    let services: BTreeSet<String> = services().map(str::to_owned).collect();
    assert_eq!(selected, services);
    for name in &services {
        // The endpoint's port is the Service's port to the container port serving /metrics.
        let port = endpoint["port"].as_str().expect("a port name");
        let service = find(&all, "Service", name).expect("service");
        let target = service["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some(port))
            .unwrap_or_else(|| panic!("{name} has no port {port}"))["targetPort"]
            .clone();
        let container = &find(&all, "Deployment", name).expect("deployment")["spec"]["template"]["spec"]
            ["containers"][0];
        assert!(
            container["ports"]
                .as_sequence()
                .is_some_and(|ports| ports.iter().any(|p| p["name"] == target)),
            "{name}: {target:?}"
        );
    }
    assert!(
        !objects(&helm_template(&[]).expect("render"))
            .iter()
            .any(|o| kind_of(o) == "ServiceMonitor")
    );
}

#[test]
fn every_setting_the_manifests_give_is_one_the_binary_knows() {
    let help = emporium_tests::serve_help();
    let known = |variable: &str| help.contains(variable) || matches!(variable, "REDIS_URL");
    for rendered in [
        kustomize("k8s/overlays/kind"),
        helm_template(&[]).expect("render"),
    ] {
        let objects = objects(&rendered);
        let config = find(&objects, "ConfigMap", "emporium-config").expect("config");
        let mut checked = 0;
        for (key, _) in config["data"].as_mapping().expect("data") {
            let key = key.as_str().expect("key");
            if key.starts_with("EMPORIUM_") || key == "REDIS_URL" {
                assert!(known(key), "{key} is not a setting of emporium");
                checked += 1;
            }
        }
        for object in objects.iter().filter(|o| kind_of(o) == "Deployment") {
            for container in object["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                for variable in container["env"].as_sequence().into_iter().flatten() {
                    let name = variable["name"].as_str().unwrap_or_default();
                    if name.starts_with("EMPORIUM_") {
                        assert!(known(name), "{name} is not a setting of emporium");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 10, "checked {checked}");
        // Every service has the admin key, for its fault switches if nothing else, and the
        // gateway key, which the services show each other.
        for service in services() {
            let env = &find(&objects, "Deployment", service).expect("deployment")["spec"]["template"]
                ["spec"]["containers"][0]["env"];
            for (variable, key) in [
                ("EMPORIUM_ADMIN_KEY", "admin-key"),
                ("EMPORIUM_GATEWAY_KEY", "gateway-key"),
            ] {
                assert!(
                    env.as_sequence().into_iter().flatten().any(|v| {
                        v["name"].as_str() == Some(variable)
                            && v["valueFrom"]["secretKeyRef"]["key"].as_str() == Some(key)
                    }),
                    "{service} has {variable}"
                );
            }
        }
    }
}

#[test]
fn the_dockerfile_passes_hadolint_and_every_script_shellcheck() {
    // The Dockerfile, and the stand-in images the pods test and the test script build.
    let mut containerfiles = vec!["Dockerfile".to_owned()];
    for entry in std::fs::read_dir(root().join("scripts/pods")).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "Containerfile") {
            containerfiles.push(format!(
                "scripts/pods/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    assert!(containerfiles.len() > 1, "{containerfiles:?}");
    let mut args = vec!["--failure-threshold", "warning"];
    args.extend(containerfiles.iter().map(String::as_str));
    must(&tool("EMPORIUM_TEST_HADOLINT"), &args);
    let mut scripts: Vec<String> = Vec::new();
    for dir in ["scripts", "localstack/init/ready.d"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "sh") {
                scripts.push(
                    path.strip_prefix(root())
                        .unwrap_or(Path::new(""))
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(scripts.len() >= 5, "{scripts:?}");
    let mut args = vec!["-S", "warning", "-x"];
    args.extend(scripts.iter().map(String::as_str));
    must(&tool("EMPORIUM_TEST_SHELLCHECK"), &args);
}
