//! deploy/ agrees with the binary: every `BULKHEAD_*` variable the compose
//! file and the Kubernetes manifests set is one `bulkhead serve` reads, every
//! service listens (and is reached) on its own port, the probes ask for the
//! health names the services report, and Prometheus scrapes the services the
//! compose file runs. (No container engine or cluster runs here: CI also
//! validates the rendered manifests against the Kubernetes schemas with
//! `kubernetes-validate --strict`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use bulkhead::services::ServiceKind;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The environment variables a subcommand reads, from its `--help`.
fn env_of(args: &[&str]) -> BTreeSet<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .arg("--help")
        .output()
        .expect("bulkhead runs");
    let text = String::from_utf8(help.stdout).expect("utf-8");
    let names: BTreeSet<String> = text
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next().map(str::to_owned))
        .collect();
    assert!(
        names.contains("BULKHEAD_DATABASE_URL") || args != ["serve"],
        "{text}"
    );
    names
}

fn kind(name: &str) -> ServiceKind {
    ServiceKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn port(kind: ServiceKind) -> u16 {
    kind.module().default_port()
}

fn text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A URL setting names the service it is for, on that service's port.
fn check_url(owner: &str, key: &str, value: &str) {
    let Some(target) = key
        .strip_prefix("BULKHEAD_")
        .and_then(|k| k.strip_suffix("_URL"))
        .filter(|k| !k.contains("DATABASE"))
    else {
        return;
    };
    let target = kind(&target.to_lowercase());
    assert_eq!(
        value,
        format!("http://{}:{}", target.name(), port(target)),
        "{owner}: {key}"
    );
}

#[test]
fn the_compose_file_sets_only_what_serve_reads_on_the_right_ports() {
    let serve_env = env_of(&["serve"]);
    let compose = &load(&deploy().join("compose.yaml"))[0];
    let services = compose["services"].as_hash().expect("services");
    let mut served = BTreeSet::new();
    for (name, service) in services {
        let name = text(name);
        let command: Vec<String> = service["command"]
            .as_vec()
            .map(|v| v.iter().map(text).collect())
            .unwrap_or_default();
        if command.first().map(String::as_str) != Some("serve") {
            continue;
        }
        assert_eq!(command, ["serve".to_owned(), name.clone()], "{name}");
        let kind = kind(&name);
        served.insert(name.clone());
        // The `<<:` merge keys are the YAML anchors' (telemetry, service).
        let mut env = BTreeMap::new();
        let environment = service["environment"].as_hash().expect("environment");
        for (key, value) in environment {
            if text(key) == "<<" {
                for (k, v) in value.as_hash().expect("merged map") {
                    env.insert(text(k), text(v));
                }
            } else {
                env.insert(text(key), text(value));
            }
        }
        for (key, value) in &env {
            if key.starts_with("BULKHEAD_") {
                assert!(
                    serve_env.contains(key),
                    "{name}: serve reads no {key} (it reads {serve_env:?})"
                );
            } else {
                assert!(
                    key.starts_with("OTEL_") || key == "RUST_LOG",
                    "{name}: {key}"
                );
            }
            check_url(&name, key, value);
        }
        for required in ["BULKHEAD_DATABASE_URL", "BULKHEAD_PLATFORM_DATABASE_URL"] {
            let url = env
                .get(required)
                .unwrap_or_else(|| panic!("{name}: {required}"));
            assert!(
                url.ends_with(&format!("/{}", kind.schema().database())),
                "{name}: {url}"
            );
        }
        assert_eq!(
            env.get("BULKHEAD_LISTEN"),
            Some(&format!("0.0.0.0:{}", port(kind))),
            "{name}"
        );
        let published: Vec<String> = service["ports"]
            .as_vec()
            .expect("ports")
            .iter()
            .map(text)
            .collect();
        assert_eq!(published, [format!("{0}:{0}", port(kind))], "{name}");
        if kind != ServiceKind::Auth {
            assert!(env.contains_key("BULKHEAD_JWKS_FILE"), "{name}");
            assert!(env.contains_key("BULKHEAD_CLIENT_SECRET"), "{name}");
        }
    }
    let all: BTreeSet<String> = ServiceKind::ALL
        .iter()
        .map(|k| k.name().to_owned())
        .collect();
    assert_eq!(served, all, "compose runs every service");

    // Each client secret is one Auth accepts.
    let secret = |name: &str| {
        text(&services[&Yaml::String(name.into())]["environment"]["BULKHEAD_CLIENT_SECRET"])
    };
    let clients =
        text(&services[&Yaml::String("auth".into())]["environment"]["BULKHEAD_SERVICE_CLIENTS"]);
    for name in ["tenant", "task", "audit"] {
        assert!(
            clients
                .split(',')
                .any(|c| c == format!("{name}={}", secret(name))),
            "{name}'s secret is not among Auth's clients: {clients}"
        );
    }

    // The migration job runs flags `migrate` has.
    let migrate = text(&services[&Yaml::String("migrate".into())]["command"][0]);
    let migrate_help = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["migrate", "--help"])
        .output()
        .expect("runs");
    let migrate_help = String::from_utf8(migrate_help.stdout).expect("utf-8");
    for flag in migrate.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(migrate_help.contains(flag), "migrate has no {flag}");
    }

    // Prometheus scrapes exactly the services compose runs, on the metrics port.
    let prometheus = &load(&deploy().join("prometheus/prometheus.yml"))[0];
    let targets: BTreeSet<String> = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_vec()
        .expect("targets")
        .iter()
        .map(text)
        .collect();
    let expected: BTreeSet<String> = all.iter().map(|s| format!("{s}:9464")).collect();
    assert_eq!(targets, expected);
}

#[test]
fn the_kubernetes_manifests_set_only_what_serve_reads_and_probe_what_it_reports() {
    let serve_env = env_of(&["serve"]);
    let base = deploy().join("k8s/base");
    let kustomization = &load(&base.join("kustomization.yaml"))[0];
    let mut deployments = BTreeSet::new();
    let mut kinds_by_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for resource in kustomization["resources"].as_vec().expect("resources") {
        for doc in load(&base.join(text(resource))) {
            let doc_kind = text(&doc["kind"]);
            let name = text(&doc["metadata"]["name"]);
            if doc_kind == "ConfigMap" {
                for (key, _) in doc["data"].as_hash().expect("data") {
                    let key = text(key);
                    assert!(
                        serve_env.contains(&key) || key.starts_with("OTEL_") || key == "RUST_LOG",
                        "configmap {name}: {key}"
                    );
                }
                continue;
            }
            kinds_by_service
                .entry(name.clone())
                .or_default()
                .insert(doc_kind.clone());
            let service = kind(&name);
            match doc_kind.as_str() {
                "Deployment" => {
                    deployments.insert(name.clone());
                    let container = &doc["spec"]["template"]["spec"]["containers"][0];
                    let args: Vec<String> = container["args"]
                        .as_vec()
                        .expect("args")
                        .iter()
                        .map(text)
                        .collect();
                    assert_eq!(args, ["serve".to_owned(), name.clone()]);
                    let mut env = BTreeMap::new();
                    for var in container["env"].as_vec().expect("env") {
                        let key = text(&var["name"]);
                        assert!(serve_env.contains(&key), "{name}: serve reads no {key}");
                        if let Some(value) = var["value"].as_str() {
                            check_url(&name, &key, value);
                        }
                        env.insert(key, var.clone());
                    }
                    for required in ["BULKHEAD_DATABASE_URL", "BULKHEAD_PLATFORM_DATABASE_URL"] {
                        assert!(env.contains_key(required), "{name}: {required}");
                    }
                    assert_eq!(
                        env["BULKHEAD_LISTEN"]["value"].as_str(),
                        Some(format!("0.0.0.0:{}", port(service)).as_str())
                    );
                    let grpc_port = container["ports"]
                        .as_vec()
                        .expect("ports")
                        .iter()
                        .find(|p| p["name"].as_str() == Some("grpc"))
                        .and_then(|p| p["containerPort"].as_i64());
                    assert_eq!(grpc_port, Some(i64::from(port(service))), "{name}");
                    let probe = |which: &str| {
                        let grpc = &container[which]["grpc"];
                        (grpc["port"].as_i64(), text(&grpc["service"]))
                    };
                    assert_eq!(
                        probe("readinessProbe"),
                        (
                            Some(i64::from(port(service))),
                            service.grpc_name().to_owned()
                        ),
                        "{name}: ready while its database answers"
                    );
                    for which in ["livenessProbe", "startupProbe"] {
                        assert_eq!(
                            probe(which),
                            (
                                Some(i64::from(port(service))),
                                bulkhead_server::LIVENESS.to_owned()
                            ),
                            "{name}: {which}"
                        );
                    }
                    assert!(
                        !container["resources"]["requests"]["cpu"].is_badvalue(),
                        "{name}: resource requests"
                    );
                }
                "Service" => {
                    let grpc = doc["spec"]["ports"]
                        .as_vec()
                        .expect("ports")
                        .iter()
                        .find(|p| p["name"].as_str() == Some("grpc"))
                        .and_then(|p| p["port"].as_i64());
                    assert_eq!(grpc, Some(i64::from(port(service))), "{name}");
                }
                _ => {}
            }
        }
    }
    let all: BTreeSet<String> = ServiceKind::ALL
        .iter()
        .map(|k| k.name().to_owned())
        .collect();
    assert_eq!(deployments, all);
    for (name, kinds) in kinds_by_service {
        let expected: BTreeSet<String> = [
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(kinds, expected, "{name}");
    }
}
