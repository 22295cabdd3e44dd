//! The Kubernetes base (deploy/kubernetes) and live reload from a mounted ConfigMap:
//! `kubectl kustomize` renders the base and docs/deploy.md's overlay with the probes, security
//! context, mounts and replicas promised; the PrometheusRule is docs/alerts.yaml; and purser,
//! its files in a volume updated exactly as the kubelet does (a new timestamped folder, `..data`
//! swapped by a rename), reloads the policy, the htpasswd file and the tokens file within two
//! seconds each, and keeps the last good version of each when the new one is broken.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use purser_testkit::kube::ConfigMapVolume;
use purser_testkit::policy::{granted, APPLY_BOUND, EVENT_TIMEOUT};
use purser_testkit::*;
use serde_json::{json, Value};

const BASE: &str = "deploy/kubernetes";
const RULE: &str = "deploy/kubernetes/prometheusrule.yaml";

/// `kubectl kustomize DIR`: (success, stdout, stderr).
fn kustomize_raw(dir: &Path) -> (bool, String, String) {
    let kubectl = require_on_path("kubectl", "kubernetes-client");
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl kustomize DIR`, as JSON values, one per document.
fn kustomize(dir: &Path) -> Vec<Value> {
    let (ok, text, err) = kustomize_raw(dir);
    assert!(ok, "kubectl kustomize {}: {err}", dir.display());
    documents(&text)
}

fn documents(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str::<Value>(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered output"))
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The volume of the pod named `name`.
fn volume<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volume mounted at `path`, checked read-only and whole (a subPath is never updated).
fn mounted_at<'a>(deployment: &'a Value, path: &str) -> &'a Value {
    let mounts = container(deployment)["volumeMounts"].as_array().unwrap();
    let m = mounts
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("nothing mounted at {path}"));
    assert_eq!(m["readOnly"], true, "{path} is mounted read-only");
    assert!(m.get("subPath").is_none(), "{path}: no subPath");
    volume(deployment, m["name"].as_str().unwrap())
}

fn probe(c: &Value, which: &str, path: &str) {
    let p = &c[which]["httpGet"];
    assert_eq!(p["path"], path, "{which}");
    assert_eq!(p["port"], "token", "{which}");
}

#[test]
fn the_base_renders_probes_security_mounts_and_replicas() {
    let docs = kustomize(Path::new(BASE));
    let mut kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceMonitor"
        ]
    );

    let d = find(&docs, "Deployment", "purser");
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 3);
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(spec["selector"]["matchLabels"], *labels);
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 30);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    let c = container(d);
    assert_eq!(
        c["image"],
        format!("localhost/purser:{}", env!("CARGO_PKG_VERSION")),
        "the base's image tag follows the crate's version"
    );
    assert_eq!(
        c["args"],
        json!(["serve", "--config", "/etc/purser/purser.yaml"])
    );
    probe(c, "livenessProbe", "/healthz");
    probe(c, "readinessProbe", "/readyz");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    for r in ["cpu", "memory"] {
        assert!(
            c["resources"]["requests"][r].is_string(),
            "a {r} request is set"
        );
    }
    let ports: Vec<(String, u64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [("token".to_string(), 5001), ("metrics".to_string(), 9090)]
    );

    // The config, policy and users from the ConfigMap, whose name never changes (so that the
    // kubelet updates the mounted files in place); the key from the Secret.
    let config = mounted_at(d, "/etc/purser");
    assert_eq!(config["configMap"]["name"], "purser-config");
    let cm = find(&docs, "ConfigMap", "purser-config");
    let mut keys: Vec<&String> = cm["data"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["policy.yaml", "purser.yaml", "users.htpasswd"]);
    let key = mounted_at(d, "/var/lib/purser");
    assert_eq!(key["secret"]["secretName"], "purser-signing-key");

    // The ConfigMap's configuration is valid where it is mounted, with the Secret's key.
    let cm_purser: Value =
        serde_norway::from_str(cm["data"]["purser.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        cm_purser["token"]["signing_key_file"],
        "/var/lib/purser/signing.pem"
    );
    assert_eq!(cm_purser["token"]["generate_key"], false);
    check_config_of_configmap(cm);

    let svc = find(&docs, "Service", "purser");
    assert_eq!(svc["spec"]["selector"], *labels);
    let pdb = find(&docs, "PodDisruptionBudget", "purser");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let sm = find(&docs, "ServiceMonitor", "purser");
    assert_eq!(sm["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert!(svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "metrics"));
}

/// `purser check-config` on the ConfigMap's files laid out as the pod sees them, the key
/// (made here) at the Secret's path given through the environment.
fn check_config_of_configmap(cm: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, String)> = cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let volume = ConfigMapVolume::create(&dir.path().join("etc-purser"), &refs);
    let key = dir.path().join("signing.pem");
    openssl_rsa_key_and_cert(&key, &dir.path().join("signing.crt"));
    let out = Command::new(purser_bin())
        .args(["check-config", "--config"])
        .arg(volume.path("purser.yaml"))
        .env("PURSER_TOKEN__SIGNING_KEY_FILE", &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config of the ConfigMap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What deploy/kubernetes/prometheusrule.yaml must hold: docs/alerts.yaml's rules under `spec`.
fn rule_from_alerts() -> String {
    let alerts = fs::read_to_string("docs/alerts.yaml").unwrap();
    let start = alerts
        .lines()
        .position(|l| l.starts_with("groups:"))
        .expect("docs/alerts.yaml has groups:");
    let mut out = String::from(
        "# Generated from docs/alerts.yaml (the rules, indented under spec): edit that file, then\n\
         # `PURSER_REGENERATE=1 cargo test --test deploy_kubernetes` writes this one again.\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: purser\n  labels:\n    app.kubernetes.io/name: purser\n\
         spec:\n",
    );
    for line in alerts.lines().skip(start) {
        if line.trim().is_empty() {
            out.push('\n');
        } else {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_prometheus_rule_is_docs_alerts_yaml() {
    let want = rule_from_alerts();
    if std::env::var_os("PURSER_REGENERATE").is_some() {
        fs::write(RULE, &want).unwrap();
    }
    let have = fs::read_to_string(RULE).unwrap();
    assert!(
        have == want,
        "{RULE} differs from docs/alerts.yaml: run `PURSER_REGENERATE=1 cargo test --test deploy_kubernetes`"
    );
    // And as rendered: the same groups, rule for rule.
    let docs = kustomize(Path::new(BASE));
    let rule = find(&docs, "PrometheusRule", "purser");
    let alerts: Value =
        serde_norway::from_str(&fs::read_to_string("docs/alerts.yaml").unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    assert!(!alerts["groups"][0]["rules"].as_array().unwrap().is_empty());
}

/// docs/deploy.md's overlay: a copy of the base, the commands that make the key and a user,
/// the overlay's files; it renders with the namespace, image, files and Secret it says.
#[test]
fn the_overlay_of_deploy_md_renders() {
    let page = "docs/deploy.md";
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let cp = Command::new("cp")
        .args(["-a", BASE])
        .arg(&base)
        .status()
        .unwrap();
    assert!(cp.success());
    let prod = dir.path().join("production");
    fs::create_dir_all(&prod).unwrap();
    for name in ["kustomization.yaml", "purser.yaml", "policy.yaml"] {
        let text = doc_block(page, &format!("# production/{name}"));
        fs::write(prod.join(name), text).unwrap();
    }
    // The commands of the page, run in production/ with this build's purser on PATH.
    let commands = doc_block(page, "# in production/: the signing key and a first user");
    let path = format!(
        "{}:{}",
        purser_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    require_on_path("htpasswd", "apache2-utils");
    let out = Command::new("sh")
        .args(["-ec", &commands])
        .current_dir(&prod)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{commands}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // kustomize 2 (kubectl 1.20, Debian's kubernetes-client) takes a folder only under
    // `bases:`, as the page says; later ones take it under `resources:` as written.
    let (ok, text, err) = kustomize_raw(&prod);
    let text = if !ok && err.contains("must be a file") {
        let k = prod.join("kustomization.yaml");
        let old = fs::read_to_string(&k)
            .unwrap()
            .replace("\nresources:\n", "\nbases:\n");
        fs::write(&k, old).unwrap();
        let (ok, text, err) = kustomize_raw(&prod);
        assert!(ok, "kubectl kustomize with bases: {err}");
        text
    } else {
        assert!(ok, "kubectl kustomize {}: {err}", prod.display());
        text
    };
    let docs = documents(&text);
    let d = find(&docs, "Deployment", "purser");
    assert_eq!(d["metadata"]["namespace"], "registry");
    assert_eq!(
        container(d)["image"],
        format!(
            "registry.example.org/tools/purser:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let secret = find(&docs, "Secret", "purser-signing-key");
    assert!(secret["data"]["signing.pem"].is_string());
    assert!(secret["data"]["signing.crt"].is_string());
    assert_eq!(
        mounted_at(d, "/var/lib/purser")["secret"]["secretName"],
        "purser-signing-key"
    );
    let cm = find(&docs, "ConfigMap", "purser-config");
    assert_eq!(
        cm["data"]["policy.yaml"].as_str().unwrap(),
        fs::read_to_string(prod.join("policy.yaml")).unwrap()
    );
    assert!(cm["data"]["users.htpasswd"]
        .as_str()
        .unwrap()
        .starts_with("ci-robot:$2y$"));
    check_config_of_configmap(cm);
}

// ---------------------------------------------------------------------------------------------
// Live reload from a ConfigMap volume

const POLICY_1: &str = r#"rules:
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push]
"#;

const POLICY_2: &str = r#"rules:
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push]
  - name: shared read
    match: { account: "*", name: "shared/**" }
    actions: [pull]
"#;

/// `purser token create --file FILE --name NAME`: the secret.
fn create_token(file: &Path, name: &str) -> String {
    let out = run_purser(
        &[
            "token",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--name",
            name,
            "--expires",
            "1d",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn login_status(p: &Purser, user: &str, password: &str) -> u16 {
    Http::get(&p.token_url())
        .query(&[("service", SERVICE)])
        .basic(user, password)
        .send()
        .unwrap()
        .status
}

fn reloads(p: &Purser, source: &str, outcome: &str) -> f64 {
    p.metric(
        "purser_reloads_total",
        &[("source", source), ("outcome", outcome)],
    )
}

/// Polls `cond` until it holds, at most `bound` after `since`; returns the time taken.
fn within(bound: Duration, since: Instant, what: &str, p: &Purser, cond: impl Fn() -> bool) {
    loop {
        if cond() {
            eprintln!("{what}: {:?}", since.elapsed());
            return;
        }
        assert!(
            since.elapsed() < bound,
            "{what}: not within {bound:?}\n{}",
            p.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn configmap_updates_reload_policy_htpasswd_and_tokens_within_two_seconds() {
    let scratch = tempfile::Builder::new()
        .prefix("purser-configmap-")
        .tempdir()
        .unwrap();
    let s = scratch.path().to_path_buf();

    // The machine tokens: one at first, two in the next version.
    let tokens_file = s.join("tokens-work.yaml");
    let one = create_token(&tokens_file, "ci-one");
    let tokens_1 = fs::read_to_string(&tokens_file).unwrap();
    let two = create_token(&tokens_file, "ci-two");
    let tokens_2 = fs::read_to_string(&tokens_file).unwrap();

    let users_1 = htpasswd(&["-nbB", ALICE.0, ALICE.1]);
    let dora = ("dora", "dora-secret");
    let users_2 = format!("{}{}", users_1, htpasswd(&["-nbB", dora.0, dora.1]));

    // The Secret's volume: the signing key.
    let made = s.join("made");
    fs::create_dir_all(&made).unwrap();
    openssl_rsa_key_and_cert(&made.join("signing.pem"), &made.join("signing.crt"));
    let key_volume = ConfigMapVolume::create(
        &s.join("secret"),
        &[
            (
                "signing.pem",
                &fs::read_to_string(made.join("signing.pem")).unwrap(),
            ),
            (
                "signing.crt",
                &fs::read_to_string(made.join("signing.crt")).unwrap(),
            ),
        ],
    );

    let port = free_port();
    let metrics_port = free_port();
    let config = json!({
        "server": { "listen": format!("127.0.0.1:{port}") },
        "metrics": { "listen": format!("127.0.0.1:{metrics_port}") },
        "log": { "level": "debug" },
        "token": {
            "issuer": ISSUER,
            "service": [SERVICE],
            "signing_key_file": key_volume.path("signing.pem"),
            "generate_key": false,
        },
        "authn": {
            "order": ["tokens", "htpasswd"],
            "anonymous": false,
            "tokens": { "file": "tokens.yaml" },
            "htpasswd": { "file": "users.htpasswd" },
        },
        "authz": { "policy_file": "policy.yaml" },
        "limits": { "failed_logins": { "max": 1000, "window": "60s", "lockout": "1s" } },
    })
    .to_string();
    let version = |policy: &str, users: &str, tokens: &str| -> Vec<(String, String)> {
        vec![
            ("purser.yaml".into(), config.clone()),
            ("policy.yaml".into(), policy.into()),
            ("users.htpasswd".into(), users.into()),
            ("tokens.yaml".into(), tokens.into()),
        ]
    };
    let volume_dir: PathBuf = s.join("config");
    let write = |vol: &ConfigMapVolume, v: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        vol.update(&refs);
    };
    let first = version(POLICY_1, &users_1, &tokens_1);
    let refs: Vec<(&str, &str)> = first
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let volume = ConfigMapVolume::create(&volume_dir, &refs);
    assert!(fs::symlink_metadata(volume.path("policy.yaml"))
        .unwrap()
        .file_type()
        .is_symlink());

    let cwd = s.clone();
    let args = [
        "serve".to_string(),
        "--config".to_string(),
        volume.path("purser.yaml").display().to_string(),
    ];
    let p = Purser::launch(
        scratch,
        &cwd,
        &args,
        &[],
        port,
        metrics_port,
        key_volume.path("signing.pem"),
    );
    let shared = "repository:shared/app:pull";
    assert!(granted(&p, Some(ALICE), shared).is_empty());
    assert_eq!(login_status(&p, dora.0, dora.1), 401);
    assert_eq!(login_status(&p, "ci-two", &two), 401);
    assert_eq!(login_status(&p, "ci-one", &one), 200);

    // Each file's new version, one at a time, as `kubectl apply` and the kubelet deliver it.
    let t = Instant::now();
    write(&volume, version(POLICY_2, &users_1, &tokens_1));
    within(APPLY_BOUND, t, "policy reloaded", &p, || {
        granted(&p, Some(ALICE), shared) == ["pull"]
    });
    let t = Instant::now();
    write(&volume, version(POLICY_2, &users_2, &tokens_1));
    within(APPLY_BOUND, t, "htpasswd reloaded", &p, || {
        login_status(&p, dora.0, dora.1) == 200
    });
    let t = Instant::now();
    write(&volume, version(POLICY_2, &users_2, &tokens_2));
    within(APPLY_BOUND, t, "tokens reloaded", &p, || {
        login_status(&p, "ci-two", &two) == 200
    });

    // A broken version of each is refused, counted, and the last good one keeps serving.
    let broken = [
        ("policy", version("rules: [\n", &users_2, &tokens_2)),
        ("htpasswd", version(POLICY_2, "dora\n", &tokens_2)),
        ("tokens", version(POLICY_2, &users_2, "tokens: {{{\n")),
    ];
    for (source, v) in broken {
        let failures = reloads(&p, source, "failure");
        let t = Instant::now();
        write(&volume, v);
        within(
            EVENT_TIMEOUT,
            t,
            &format!("{source} failure counted"),
            &p,
            || reloads(&p, source, "failure") == failures + 1.0,
        );
        assert_eq!(granted(&p, Some(ALICE), shared), ["pull"], "after {source}");
        assert_eq!(login_status(&p, dora.0, dora.1), 200, "after {source}");
        assert_eq!(login_status(&p, "ci-two", &two), 200, "after {source}");
        // Put the good version back (and see it loaded) before breaking the next file.
        let loads = reloads(&p, source, "success");
        write(&volume, version(POLICY_2, &users_2, &tokens_2));
        within(
            EVENT_TIMEOUT,
            Instant::now(),
            &format!("{source} good again"),
            &p,
            || reloads(&p, source, "success") > loads,
        );
    }
}
