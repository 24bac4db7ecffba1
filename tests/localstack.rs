//! The LocalStack compose file, read as Compose reads it, kept true to the binary: the pinned
//! image, the auth token passed through, the init hook mounted where LocalStack runs it, each
//! service on its own port, and only settings the binary knows.

use emporium::run::Service;
use serde_norway::Value;

const COMPOSE: &str = include_str!("../localstack/compose.yaml");
const HOOK: &str = include_str!("../localstack/init/ready.d/10-emporium-init.sh");

/// The compose file with its `<<` merge keys applied, as Compose reads it.
fn compose() -> Value {
    let mut compose: Value = serde_norway::from_str(COMPOSE).expect("compose.yaml is YAML");
    compose.apply_merge().expect("merge keys");
    compose
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Every variable of a service's environment.
fn environment(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .expect("environment is a mapping")
        .iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect()
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(!service.is_null(), "compose runs {name}");
    service
}

#[test]
fn localstack_is_pinned_takes_a_token_and_runs_the_init_hook() {
    let compose = compose();
    let localstack = service(&compose, "localstack");
    assert_eq!(
        localstack["image"].as_str(),
        Some("localstack/localstack:4.14.0")
    );
    let env = environment(localstack);
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(
        get("LOCALSTACK_AUTH_TOKEN").as_deref(),
        Some("${LOCALSTACK_AUTH_TOKEN:-}")
    );
    let services = get("SERVICES").expect("SERVICES");
    // The events bus runs on SNS and SQS (docs/EVENTS.md).
    let listed: Vec<&str> = services.split(',').collect();
    for wanted in ["dynamodb", "s3", "sns", "sqs"] {
        assert!(listed.contains(&wanted), "{services}");
    }
    let volumes: Vec<String> = localstack["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .map(text)
        .collect();
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with("./init/ready.d:/etc/localstack/init/ready.d")),
        "{volumes:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with("emporium-bin:/opt/emporium")),
        "{volumes:?}"
    );
    assert!(
        HOOK.contains("/opt/emporium/emporium"),
        "the hook runs the mounted binary"
    );
}

#[test]
fn the_hook_holds_no_copy_of_the_schema() {
    assert!(HOOK.contains("\" init"), "the hook runs `emporium init`");
    for service in Service::ALL {
        for table in service.tables() {
            for index in table.indexes {
                assert!(
                    !HOOK.contains(index.name),
                    "the hook names index {}",
                    index.name
                );
            }
            if let Some(ttl) = table.ttl_attribute {
                assert!(!HOOK.contains(ttl), "the hook names TTL attribute {ttl}");
            }
        }
    }
    for api in ["create-table", "CreateTable", "mb s3://", "awslocal"] {
        assert!(!HOOK.contains(api), "the hook calls {api} itself");
    }
}

#[test]
fn each_service_runs_on_its_port_and_finds_the_others() {
    let compose = compose();
    let cli = emporium::cli::parse(vec!["emporium".into(), "up".into()]).expect("defaults");
    let emporium::cli::Command::Up(defaults) = cli.command else {
        panic!("up")
    };
    let defaults = defaults.services;
    let port = |service: Service| defaults.peers.port(service);
    for running in Service::ALL {
        let name = running.name();
        let definition = service(&compose, name);
        let command: Vec<String> = definition["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .map(text)
            .collect();
        assert_eq!(command, ["serve", name]);
        let ports: Vec<String> = definition["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(text)
            .collect();
        let expected = port(*running);
        assert_eq!(ports, [format!("127.0.0.1:{expected}:{expected}")]);
        let env = environment(definition);
        // Every service is told where the others are; nothing calls the storefront.
        for other in Service::ALL.iter().filter(|s| **s != Service::Storefront) {
            let variable = format!("EMPORIUM_{}_URL", other.name().to_ascii_uppercase());
            let url = env
                .iter()
                .find(|(k, _)| *k == variable)
                .map(|(_, v)| v.clone());
            assert_eq!(
                url,
                Some(format!("http://{}:{}", other.name(), port(*other))),
                "{name}: {variable}"
            );
        }
    }
}

#[test]
fn every_emporium_setting_in_compose_is_one_the_binary_knows() {
    let compose = compose();
    let help = emporium_tests::serve_help();
    let services = compose["services"].as_mapping().expect("services");
    let mut checked = 0;
    for (name, definition) in services {
        if definition["environment"].is_null() {
            continue;
        }
        for (variable, _) in environment(definition) {
            if variable.starts_with("EMPORIUM_") {
                assert!(
                    help.contains(&variable),
                    "{}: {variable} is not a setting of emporium",
                    text(name)
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "checked {checked} settings");
}
