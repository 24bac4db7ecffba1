//! Helpers for the tests that render and run the deployment (`deploy.rs`, `pods.rs`): the
//! workspace's root, the tools `scripts/test.sh` installs, running them, and reading the YAML
//! documents they render.

use std::path::PathBuf;
use std::process::Command;

use serde_norway::Value;

/// The workspace's root, where the manifests, the chart and the Dockerfile are.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The path of a tool the test script installed and exported as `variable`.
pub fn tool(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(path) if !path.is_empty() => path,
        _ => panic!("{variable} is not set: run the tests with scripts/test.sh, which installs it"),
    }
}

/// Runs a command in the workspace; its stdout, or what it said when it failed.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{program} {args:?} failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// [`run`], panicking with what the command said when it fails.
pub fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The YAML documents of a rendering, without the empty ones.
pub fn objects(rendered: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(rendered)
        .map(|document| {
            use serde::Deserialize as _;
            Value::deserialize(document).expect("YAML")
        })
        .filter(|value| !value.is_null())
        .collect()
}

pub fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
