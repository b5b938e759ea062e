//! deploy/kubernetes held to the code: `kubectl kustomize` renders the base
//! offline, every object parses into its typed Kubernetes struct without a
//! field left over (a misspelt field would be silently ignored by the API
//! server's older clients and by us), and then:
//! - the probes name paths `opsbot serve` answers, on the port its
//!   configuration (the ConfigMap's) listens on, and the rendered bot, run
//!   as the pod would run it, answers them;
//! - every secret the configuration reads comes from the Secret, and only those;
//! - the RBAC grants exactly the verbs `check --live` asks about;
//! - the grace period outlasts the bot's own stop budget;
//! - the ConfigMaps hold the repository's commands and a configuration that loads.

use super::support::{commands_dir, BIN};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use opsbot::action::kubernetes::{Permission, ACCESS_REVIEW, JOB_NEEDED, NEEDED};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// `kubectl kustomize DIR`, as JSON values.
fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl").arg("kustomize").arg(dir).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::from_value::<Value>(serde_yaml_ng::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}
use serde::Deserialize as _;

/// Where `typed` lost something of `given`: a field the struct does not have.
fn lost(given: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, value) in g {
                match k.get(key) {
                    Some(kv) => lost(value, kv, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}")),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) if g.len() == k.len() => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                lost(gv, kv, &format!("{path}[{i}]"), out);
            }
        }
        (g, k) if g == k => {}
        (g, k) => out.push(format!("{path}: {g} became {k}")),
    }
}

/// `doc` as `T`; fails naming every field `T` does not know.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let name = format!("{}/{}", doc["kind"], doc["metadata"]["name"]);
    let value: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut missing = Vec::new();
    lost(doc, &serde_json::to_value(&value).unwrap(), "", &mut missing);
    assert!(missing.is_empty(), "{name}: not a field of its type (misspelt?): {missing:?}");
    value
}

/// The base, each object typed.
#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    roles: BTreeMap<String, Role>,
    bindings: Vec<RoleBinding>,
    cluster_roles: BTreeMap<String, ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    sets: Vec<StatefulSet>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    budgets: Vec<PodDisruptionBudget>,
    policies: Vec<NetworkPolicy>,
}

fn objects(docs: &[Value]) -> Objects {
    let mut o = Objects::default();
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        match (doc["apiVersion"].as_str().unwrap(), doc["kind"].as_str().unwrap()) {
            ("v1", "Namespace") => o.namespaces.push(typed(doc)),
            ("v1", "ServiceAccount") => o.accounts.push(typed(doc)),
            ("v1", "ConfigMap") => o.config_maps.push(typed(doc)),
            ("v1", "Service") => o.services.push(typed(doc)),
            ("rbac.authorization.k8s.io/v1", "Role") => drop(o.roles.insert(name, typed(doc))),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => o.bindings.push(typed(doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(o.cluster_roles.insert(name, typed(doc))),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => o.cluster_bindings.push(typed(doc)),
            ("apps/v1", "StatefulSet") => o.sets.push(typed(doc)),
            ("apps/v1", "Deployment") => o.deployments.push(typed(doc)),
            ("policy/v1", "PodDisruptionBudget") => o.budgets.push(typed(doc)),
            ("networking.k8s.io/v1", "NetworkPolicy") => o.policies.push(typed(doc)),
            (api, kind) => panic!("{api} {kind} {name}: not an object the base is meant to hold"),
        }
    }
    o
}

/// A rule set as (group, resource[/subresource], verb) triples.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none(), "{rule:?}");
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "a wildcard grants more than opsbot uses: {rule:?}"
                    );
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn needed(permissions: &[Permission]) -> BTreeSet<(String, String, String)> {
    permissions
        .iter()
        .map(|p| {
            let resource = match p.subresource {
                Some(sub) => format!("{}/{sub}", p.resource),
                None => p.resource.to_string(),
            };
            (p.group().to_string(), resource, p.verb.to_string())
        })
        .collect()
}

fn container(template: &PodTemplateSpec) -> &Container {
    let pod = template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1, "one container");
    &pod.containers[0]
}

/// The ConfigMap a volume of the pod names, by the generator's name (the
/// rendered name carries a hash of its content).
fn config_map<'a>(o: &'a Objects, rendered: &str) -> &'a ConfigMap {
    o.config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(rendered))
        .unwrap_or_else(|| panic!("no ConfigMap {rendered}"))
}

/// The files the pod sees: each ConfigMap volume written out at its mount path under `root`.
fn lay_out(o: &Objects, template: &PodTemplateSpec, root: &Path) -> BTreeMap<String, String> {
    let pod = template.spec.as_ref().unwrap();
    let mut mounts = BTreeMap::new();
    for mount in container(template).volume_mounts.as_deref().unwrap_or_default() {
        let volume = pod.volumes.as_deref().unwrap_or_default().iter().find(|v| v.name == mount.name);
        let Some(source) = volume.and_then(|v| v.config_map.as_ref()) else { continue };
        let map = config_map(o, &source.name);
        let dir = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in map.data.as_ref().unwrap() {
            std::fs::write(dir.join(file), text).unwrap();
        }
        mounts.insert(mount.mount_path.clone(), source.name.clone());
    }
    mounts
}

fn env_value<'a>(c: &'a Container, name: &str) -> &'a str {
    let env = c.env.as_deref().unwrap_or_default().iter().find(|e| e.name == name);
    env.and_then(|e| e.value.as_deref()).unwrap_or_else(|| panic!("the container sets no {name}"))
}

fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            let ports = c.ports.as_deref().unwrap_or_default();
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
                .unwrap_or_else(|| panic!("port {name} is not a port of the container"))
        }
    }
}

#[test]
fn the_kubernetes_base_is_what_the_code_serves_needs_and_is_granted() {
    let ready = check_rendered(&base(), None);
    assert_eq!(ready, "ready\n");
}

/// The PostgreSQL variant: a Deployment of replicas instead of the
/// StatefulSet, each one told where it takes requests, and run here against
/// a real PostgreSQL, where it leads.
#[test]
fn the_postgres_variant_runs_replicas_on_the_database() {
    let pg = super::postgres::Postgres::start();
    let ready = check_rendered(&base().join("postgres"), Some(&pg));
    assert!(ready.starts_with("ready: leader ") && ready.ends_with("term 1\n"), "{ready}");
    // Its configuration is the base's and the store's section, nothing else.
    let base_text = std::fs::read_to_string(base().join("base/opsbot.toml")).unwrap();
    let text = std::fs::read_to_string(base().join("postgres/opsbot.toml")).unwrap();
    let added = text
        .strip_prefix(&base_text)
        .expect("postgres/opsbot.toml starts with the base's opsbot.toml, unchanged: copy it again");
    assert!(added.contains("[store]") && added.contains("type = \"postgres\""), "{added}");
}

/// Renders `dir`, checks every object against the code, runs its pod as the
/// kubelet would (on `postgres` when the variant needs it); the pod's answer
/// to its readiness probe.
fn check_rendered(dir: &Path, postgres: Option<&super::postgres::Postgres>) -> String {
    let docs = render(dir);
    let o = objects(&docs);
    let (template, namespace) = match (o.sets.as_slice(), o.deployments.as_slice()) {
        ([set], []) => {
            let spec = set.spec.as_ref().unwrap();
            // The embedded store: one replica, a volume only one pod may mount.
            assert_eq!(spec.replicas, Some(1), "sled is one process");
            let claims = spec.volume_claim_templates.as_deref().unwrap();
            assert_eq!(claims.len(), 1);
            let claim = &claims[0];
            assert_eq!(
                claim.spec.as_ref().unwrap().access_modes.as_deref(),
                Some(&["ReadWriteOncePod".to_string()][..])
            );
            let c = container(&spec.template);
            let data_mount =
                c.volume_mounts.as_deref().unwrap().iter().find(|m| Some(&m.name) == claim.metadata.name.as_ref());
            let data_mount = data_mount.expect("the claim is mounted").mount_path.clone();
            let data_dir = env_value(c, "OPSBOT_DATA_DIR");
            assert!(
                Path::new(data_dir).starts_with(&data_mount),
                "data dir {data_dir} is outside the volume at {data_mount}"
            );
            (&spec.template, set.metadata.namespace.clone().unwrap())
        }
        ([], [deployment]) => {
            let spec = deployment.spec.as_ref().unwrap();
            assert!(spec.replicas.unwrap_or(1) >= 2, "replicas on PostgreSQL");
            let rolling = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).expect("a rolling update");
            assert_eq!(
                rolling.max_unavailable,
                Some(IntOrString::Int(0)),
                "a new replica stands by before an old one goes"
            );
            let c = container(&spec.template);
            let advertise = env_value(c, "OPSBOT_ADVERTISE_URL");
            let pod_ip = c.env.as_deref().unwrap().iter().find(|e| e.name == "POD_IP").expect("POD_IP");
            let field =
                pod_ip.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("POD_IP from the downward API");
            assert_eq!(field.field_path, "status.podIP");
            assert!(advertise.starts_with("http://$(POD_IP):"), "{advertise}");
            (&spec.template, deployment.metadata.namespace.clone().unwrap())
        }
        _ => panic!("one workload: a StatefulSet (sled) or a Deployment (PostgreSQL)"),
    };
    let pod = template.spec.as_ref().unwrap();
    let c = container(template);
    let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    let selects_pod = |selector: &BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)) && !selector.is_empty()
    };

    // The configuration the pod reads, laid out as the pod sees it; it loads.
    let root = tempfile::tempdir().unwrap();
    let mounts = lay_out(&o, template, root.path());
    let config_path = env_value(c, "OPSBOT_CONFIG");
    let on_disk = root.path().join(config_path.trim_start_matches('/'));
    let loaded = opsbot::config::load(&on_disk).unwrap_or_else(|e| panic!("the ConfigMap's configuration: {e}"));
    let config = &loaded.config;
    // Its commands are the repository's, file for file.
    let mounted = |dir: &Path| {
        let dir = dir.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let found = mounts
            .iter()
            .find(|(path, _)| root.path().join(path.trim_start_matches('/')).canonicalize().unwrap() == dir);
        found.map(|(_, map)| map.clone()).unwrap_or_else(|| panic!("{} is not a mounted ConfigMap", dir.display()))
    };
    let commands_map = mounted(&config.commands_dir);
    let shipped: BTreeMap<String, String> = std::fs::read_dir(commands_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    let in_map = config_map(&o, &commands_map).data.clone().unwrap();
    for (file, text) in &shipped {
        assert!(in_map.get(file) == Some(text), "deploy/kubernetes/base/commands/{file} differs from commands/{file}: copy it again (cp commands/*.toml deploy/kubernetes/base/commands/, and list new files in base/kustomization.yaml)");
    }
    assert_eq!(
        in_map.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "the commands ConfigMap holds exactly commands/*.toml"
    );
    let runbooks: BTreeSet<String> = std::fs::read_dir(commands_dir().join("runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let runbooks_dir = config.runbooks_dir.as_ref().expect("runbooks_dir");
    let runbooks_map = mounted(runbooks_dir);
    for file in &runbooks {
        let text = std::fs::read_to_string(commands_dir().join("runbooks").join(file)).unwrap();
        assert_eq!(
            config_map(&o, &runbooks_map).data.as_ref().unwrap().get(file),
            Some(&text),
            "deploy/kubernetes/base/commands/runbooks/{file} differs from commands/runbooks/{file}"
        );
    }

    // Probes on the port `serve` listens on, at the paths it answers.
    let listen: std::net::SocketAddr = config.listen.parse().unwrap();
    let http =
        c.ports.as_deref().unwrap().iter().find(|p| p.name.as_deref() == Some("http")).expect("a port named http");
    assert_eq!(http.container_port, i32::from(listen.port()), "containerPort vs [server] listen");
    let mut probe_paths = BTreeMap::new();
    for (which, probe) in
        [("startup", &c.startup_probe), ("liveness", &c.liveness_probe), ("readiness", &c.readiness_probe)]
    {
        let get =
            probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("no {which} probe over HTTP"));
        assert_eq!(port_number(c, &get.port), i32::from(listen.port()), "{which} probe port");
        probe_paths.insert(which, get.path.clone().unwrap());
    }
    assert_eq!(probe_paths["liveness"], "/health/live");
    assert_eq!(probe_paths["readiness"], "/health/ready");

    // Every secret the configuration reads comes from the Secret, by its own
    // name; nothing else does.
    let wanted = config.secret_variables();
    let env = c.env.as_deref().unwrap();
    let from_secret: BTreeMap<&str, &k8s_openapi::api::core::v1::SecretKeySelector> =
        env.iter().filter_map(|e| Some((e.name.as_str(), e.value_from.as_ref()?.secret_key_ref.as_ref()?))).collect();
    for var in &wanted {
        let reference = from_secret
            .get(var.name.as_str())
            .unwrap_or_else(|| panic!("{} ([{}]) is not passed in from the Secret", var.name, var.section));
        assert_eq!((reference.name.as_str(), reference.key.as_str()), ("opsbot", var.name.as_str()));
        if var.required {
            assert_ne!(reference.optional, Some(true), "{} is required by serve", var.name);
        }
    }
    let names: BTreeSet<&str> = wanted.iter().map(|v| v.name.as_str()).collect();
    for name in from_secret.keys() {
        assert!(names.contains(name), "{name} comes from the Secret but the configuration never reads it");
    }
    assert!(
        env.iter().all(|e| e.value.is_none() || !names.contains(e.name.as_str())),
        "a secret written into the manifest"
    );

    // Long enough to drain.
    let budget = opsbot::app::stop_budget(config).as_secs() as i64;
    let grace = pod.termination_grace_period_seconds.expect("terminationGracePeriodSeconds");
    assert!(grace > budget, "terminationGracePeriodSeconds {grace} ≤ the bot's stop budget {budget} s");

    // Non-root, as the image's own user.
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let uid: i64 = dockerfile.split("--uid ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let security = pod.security_context.as_ref().unwrap();
    assert_eq!((security.run_as_non_root, security.run_as_user), (Some(true), Some(uid)));
    let own = c.security_context.as_ref().unwrap();
    assert_eq!((own.allow_privilege_escalation, own.read_only_root_filesystem), (Some(false), Some(true)));

    // RBAC: exactly the verbs the code uses, bound to the pod's account.
    let account = pod.service_account_name.clone().unwrap();
    let account_ns = namespace;
    assert!(o
        .accounts
        .iter()
        .any(|a| a.metadata.name.as_ref() == Some(&account) && a.metadata.namespace.as_ref() == Some(&account_ns)));
    assert!(o.namespaces.iter().any(|n| n.metadata.name.as_ref() == Some(&account_ns)));
    let role =
        |name: &str| grants(o.roles.get(name).unwrap_or_else(|| panic!("no Role {name}")).rules.as_deref().unwrap());
    assert_eq!(role("opsbot-deployer"), needed(&NEEDED), "the deployer Role vs access.rs NEEDED");
    assert_eq!(role("opsbot-runbook-jobs"), needed(&JOB_NEEDED), "the Jobs Role vs access.rs JOB_NEEDED");
    assert_eq!(grants(o.cluster_roles["opsbot-access-review"].rules.as_deref().unwrap()), needed(&[ACCESS_REVIEW]));
    assert_eq!(o.roles.len() + o.cluster_roles.len(), 3, "no other roles");
    let service_namespaces: BTreeSet<String> = config
        .services
        .values()
        .filter_map(|s| match &s.backend {
            opsbot::config::Backend::Kubernetes { context: None, namespace, .. } => Some(namespace.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(service_namespaces, BTreeSet::from([o.roles["opsbot-deployer"].metadata.namespace.clone().unwrap()]));
    let job_namespaces: BTreeSet<String> = config.jobs.values().map(|j| j.namespace.clone()).collect();
    assert_eq!(job_namespaces, BTreeSet::from([o.roles["opsbot-runbook-jobs"].metadata.namespace.clone().unwrap()]));
    for (role_name, role) in &o.roles {
        let bound = o.bindings.iter().any(|b| {
            b.role_ref.kind == "Role"
                && &b.role_ref.name == role_name
                && b.metadata.namespace == role.metadata.namespace
                && b.subjects.as_deref().unwrap_or_default().iter().all(|s| {
                    s.kind == "ServiceAccount" && s.name == account && s.namespace.as_ref() == Some(&account_ns)
                })
        });
        assert!(bound, "Role {role_name} is bound to {account_ns}/{account}, and only to it");
    }
    assert_eq!(o.bindings.len(), o.roles.len());
    let cluster_binding = &o.cluster_bindings[0];
    assert_eq!((o.cluster_bindings.len(), cluster_binding.role_ref.name.as_str()), (1, "opsbot-access-review"));
    let subjects = cluster_binding.subjects.as_deref().unwrap();
    assert!(subjects.len() == 1 && subjects[0].name == account && subjects[0].namespace.as_ref() == Some(&account_ns));

    // The Service, the budget and the policy find the pod, on its port.
    let service = o.services[0].spec.as_ref().unwrap();
    assert!(selects_pod(service.selector.as_ref().unwrap()));
    assert_eq!(
        port_number(c, service.ports.as_ref().unwrap()[0].target_port.as_ref().unwrap()),
        i32::from(listen.port())
    );
    let budget = o.budgets[0].spec.as_ref().unwrap();
    assert!(selects_pod(budget.selector.as_ref().unwrap().match_labels.as_ref().unwrap()));
    let policy = o.policies[0].spec.as_ref().unwrap();
    assert!(selects_pod(policy.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()));
    let ingress = policy.ingress.as_deref().unwrap();
    let open: Vec<i32> = ingress
        .iter()
        .flat_map(|r| r.ports.as_deref().unwrap_or_default())
        .map(|p| port_number(c, p.port.as_ref().unwrap()))
        .collect();
    assert_eq!(open, [i32::from(listen.port())], "ingress: the HTTP port only");

    // The pod, run here as the kubelet would run it: its config files, its
    // env (each secret a stand-in value), its probes answered.
    let mut secrets: Vec<(String, String)> = from_secret
        .keys()
        .map(|name| {
            let value = if *name == "OPSBOT_AUDIT_KEY" { "11".repeat(32) } else { format!("test-{name}") };
            (name.to_string(), value)
        })
        .collect();
    secrets.sort();
    // The store's URL is the real database's; the kubelet's $(POD_IP) is here.
    if let Some(pg) = postgres {
        for (name, value) in secrets.iter_mut() {
            if Some(name.as_str()) == store_url_env(config) {
                *value = format!("host=127.0.0.1 port={} user=opsbot dbname=postgres", pg.port);
            }
        }
    }
    // Plain values as the pod has them (the data directory under `root`).
    let plain: Vec<(String, String)> = c
        .env
        .as_deref()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .filter(|(name, _)| name != "OPSBOT_CONFIG")
        .map(|(name, value)| match name.as_str() {
            "OPSBOT_DATA_DIR" => (name, root.path().join(value.trim_start_matches('/')).display().to_string()),
            _ => (name, value.replace("$(POD_IP)", "127.0.0.1")),
        })
        .collect();
    let serve = |secrets: &[(String, String)]| {
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("OPSBOT_CONFIG", &on_disk)
            .envs(plain.iter().map(|(k, v)| (k, v)))
            .env("OPSBOT_LOG", "warn")
            .env("SLACK_API_URL", "http://127.0.0.1:9/api/")
            .envs(secrets.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts")
    };
    let mut child = serve(&secrets);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("serve prints its address").unwrap();
    let address = first.strip_prefix("opsbot serving on ").unwrap_or_else(|| panic!("unexpected: {first}")).to_string();
    std::thread::spawn(move || for _ in lines {});
    let get = |path: &str| match ureq::get(&format!("http://{address}{path}")).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{path}: {e}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for (which, path) in &probe_paths {
        while get(path) != 200 {
            assert!(std::time::Instant::now() < deadline, "the {which} probe {path} never answered 200");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert_eq!(get("/metrics"), 200, "what the ServiceMonitor scrapes");
    let ready = match ureq::get(&format!("http://{address}/health/ready")).call() {
        Ok(r) => r.into_string().unwrap(),
        Err(e) => panic!("{e}"),
    };
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());

    // A required secret the Secret lacks: serve says which, and does not start.
    for var in wanted.iter().filter(|v| v.required) {
        let fewer: Vec<(String, String)> = secrets.iter().filter(|(k, _)| *k != var.name).cloned().collect();
        let out = serve(&fewer).wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains(&format!("{} is not set", var.name)), "{}: {said}", var.name);
    }
    ready
}

/// The variable the store's URL is read from, on PostgreSQL.
fn store_url_env(config: &opsbot::config::Config) -> Option<&str> {
    match &config.store {
        opsbot::config::StoreSettings::Postgres { url_env } => Some(url_env),
        opsbot::config::StoreSettings::Sled => None,
    }
}

#[test]
fn the_servicemonitor_component_scrapes_the_services_http_port() {
    let overlay = tempfile::tempdir().unwrap();
    // kustomize takes only relative paths: up to / from the overlay, then down.
    let up = "../".repeat(overlay.path().canonicalize().unwrap().components().count() - 1);
    let base = format!("{up}{}", base().canonicalize().unwrap().display().to_string().trim_start_matches('/'));
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- {base}\ncomponents:\n- {base}/components/servicemonitor\n"
        ),
    )
    .unwrap();
    let docs = render(overlay.path());
    let monitor = docs.iter().find(|d| d["kind"] == "ServiceMonitor").expect("a ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let service: Service = typed(docs.iter().find(|d| d["kind"] == "Service").unwrap());
    let ports = service.spec.as_ref().unwrap().ports.clone().unwrap();
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert!(
        ports.iter().any(|p| p.name.as_deref() == endpoint["port"].as_str()),
        "{endpoint} names no port of the Service"
    );
    assert_eq!(endpoint["path"], "/metrics");
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let labels = service.metadata.labels.clone().unwrap();
    assert!(
        selector.iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str()),
        "the ServiceMonitor does not select the Service"
    );
}
