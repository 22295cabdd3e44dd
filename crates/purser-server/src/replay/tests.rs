use std::io::Write as _;

use super::*;

const LIVE: &str = r#"rules:
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: bob reads shared
    match: { account: bob, name: "shared/**" }
    actions: [pull]
  - name: shared for everyone
    match: { account: "*", name: "shared/**" }
    actions: [pull, push]
  - name: office
    match: { ip: ["10.0.0.0/8"], service: registry.e2e, name: "office/**" }
    actions: [pull]
"#;

/// The rule "shared for everyone" moved to the top.
const MOVED: &str = r#"rules:
  - name: shared for everyone
    match: { account: "*", name: "shared/**" }
    actions: [pull, push]
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: bob reads shared
    match: { account: bob, name: "shared/**" }
    actions: [pull]
  - name: office
    match: { ip: ["10.0.0.0/8"], service: registry.e2e, name: "office/**" }
    actions: [pull]
"#;

/// An audit record as the JSON log writes it, with the live policy's decision.
fn record(account: &str, groups: &[&str], ip: &str, scopes: &[&str]) -> String {
    let live = Policy::parse(LIVE, "live.yaml").unwrap();
    let who = Identity::new(account, groups.iter().map(|g| g.to_string()).collect());
    let ctx = RequestContext {
        service: "registry.e2e".into(),
        client_ip: ip.parse().ok(),
    };
    let decisions: Vec<(ResourceScope, Grant)> = scopes
        .iter()
        .map(|s| {
            let scope: ResourceScope = s.parse().unwrap();
            let g = live.authorize(&who, &ctx, &scope);
            (scope, g)
        })
        .collect();
    let scopes = crate::stack::telemetry::scopes_json(&decisions);
    serde_json::json!({
        "timestamp": "2026-11-30T12:00:00Z",
        "level": "INFO",
        "client_ip": ip,
        "method": "GET",
        "account": account,
        "backend": "static",
        "groups": groups,
        "stale": false,
        "service": "registry.e2e",
        "scopes": serde_json::from_str::<serde_json::Value>(&scopes).unwrap(),
        "outcome": "issued",
        "status": 200,
        "message": "token request",
        "target": "purser::audit",
    })
    .to_string()
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("live.yaml"), LIVE).unwrap();
        std::fs::write(dir.path().join("moved.yaml"), MOVED).unwrap();
        Files { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn log(&self, name: &str, lines: &[String]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    }
    fn opts(&self, policy: &str, against: Option<&str>, logs: Vec<PathBuf>) -> ReplayOptions {
        ReplayOptions {
            policy: self.path(policy),
            against: against.map(|a| self.path(a)),
            logs,
            service: None,
        }
    }
}

fn traffic() -> Vec<String> {
    vec![
        record("alice", &[], "127.0.0.1", &["repository:shared/app:pull,push"]),
        record("bob", &[], "127.0.0.1", &["repository:shared/app:pull,push"]),
        record("bob", &[], "127.0.0.1", &["repository:shared/tools/x:pull,push"]),
        record("bob", &[], "127.0.0.1", &["repository:shared/app:pull"]),
        record("admin", &["admins"], "127.0.0.1", &["repository:shared/app:*"]),
        record(
            "admin",
            &["admins"],
            "127.0.0.1",
            &["repository:shared/app:pull,push", "registry:catalog:*"],
        ),
        record("carol", &[], "10.1.2.3", &["repository:office/app:pull"]),
        r#"{"timestamp":"t","level":"INFO","message":"loaded","target":"purser_server::reload"}"#
            .into(),
        r#"{"timestamp":"t","level":"INFO","account":"x","scopes":[],"outcome":"unauthorized","target":"purser::audit"}"#
            .into(),
        "2026-11-30T12:00:00Z  INFO purser_server::serve: purser serving".into(),
    ]
}

#[test]
fn the_moved_rule_changes_exactly_the_requests_it_now_takes() {
    let f = Files::new();
    let mut lines = traffic();
    // A record cut short by a rotation.
    let cut = record(
        "bob",
        &[],
        "127.0.0.1",
        &["repository:shared/cut:pull,push"],
    );
    lines.push(cut[..cut.len() / 2].to_string());
    let log = f.log("audit.log", &lines);
    for against in [None, Some("live.yaml")] {
        let r = replay(&f.opts("moved.yaml", against, vec![log.clone()])).unwrap();
        assert_eq!(r.records, 7, "{against:?}");
        assert_eq!(r.scopes, 8);
        assert_eq!(r.skipped, 2, "the text line and the cut record");
        assert_eq!(r.other, 1);
        assert_eq!(r.without_scopes, 1);
        assert_eq!(r.changed.get(&Divergence::More), Some(&2));
        assert_eq!(r.changed.get(&Divergence::Less), Some(&1));
        assert_eq!(r.changed_total(), 3);
        let json = r.to_json();
        let groups = json["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{json:#}");
        assert_eq!(groups[0]["account"], "admin");
        assert_eq!(groups[0]["pattern"], "shared/app");
        assert_eq!(groups[0]["outcome"], "less");
        assert_eq!(groups[0]["old"]["granted"], serde_json::json!(["*"]));
        assert_eq!(groups[0]["old"]["rule"]["name"], "admins");
        assert_eq!(groups[0]["new"]["granted"], serde_json::json!([]));
        assert_eq!(groups[0]["new"]["rule"]["name"], "shared for everyone");
        assert_eq!(groups[1]["account"], "bob");
        assert_eq!(groups[1]["count"], 2);
        assert_eq!(groups[1]["pattern"], "shared/**");
        assert_eq!(groups[1]["old"]["rule"]["index"], 1);
        assert_eq!(groups[1]["new"]["rule"]["index"], 0);
        let text = r.render_text();
        assert!(
            text.contains("account \"bob\", repository shared/**: 2 decisions (more)\n  was pull (rule 1 \"bob reads shared\")\n  now pull,push (rule 0 \"shared for everyone\")\n  e.g. repository:shared/app:pull,push repository:shared/tools/x:pull,push\n"),
            "{text}"
        );
        assert!(text.contains("3 decisions changed (more 2, less 1, different 0)"));
    }
    // The same policy changes nothing, against the log or against itself.
    for against in [None, Some("live.yaml")] {
        let r = replay(&f.opts("live.yaml", against, vec![log.clone()])).unwrap();
        assert_eq!(r.changed_total(), 0, "{}", r.render_text());
        assert_eq!(r.records, 7);
    }
}

#[test]
fn gzip_logs_read_as_they_are_and_several_logs_add_up() {
    let f = Files::new();
    let plain = f.log("a.log", &traffic());
    let gz = f.path("b.log.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all((traffic().join("\n") + "\n").as_bytes())
        .unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let one = replay(&f.opts("moved.yaml", None, vec![plain.clone()])).unwrap();
    let zipped = replay(&f.opts("moved.yaml", None, vec![gz.clone()])).unwrap();
    assert_eq!(one.to_json(), zipped.to_json());
    let both = replay(&f.opts("moved.yaml", None, vec![plain, gz])).unwrap();
    assert_eq!(both.changed_total(), 2 * one.changed_total());
    assert_eq!(both.to_json()["groups"][1]["count"], 4);
}

#[test]
fn the_address_and_the_service_of_the_record_decide_ip_and_service_rules() {
    let f = Files::new();
    // Without the office rule, carol (from 10.1.2.3) loses her pull.
    std::fs::write(
        f.path("no-office.yaml"),
        &LIVE[..LIVE.find("  - name: office").unwrap()],
    )
    .unwrap();
    let log = f.log("a.log", &traffic());
    let r = replay(&f.opts("no-office.yaml", None, vec![log.clone()])).unwrap();
    assert_eq!(r.changed_total(), 1);
    assert_eq!(r.to_json()["groups"][0]["account"], "carol");
    // A record from an unknown address, or for another service, was not granted the pull.
    let other: Vec<String> = vec![
        record("carol", &[], "unknown", &["repository:office/app:pull"]),
        record("carol", &[], "10.1.2.3", &["repository:office/app:pull"])
            .replace("\"service\":\"registry.e2e\"", "\"service\":\"other\""),
    ];
    let log = f.log("b.log", &other);
    let r = replay(&f.opts("no-office.yaml", Some("live.yaml"), vec![log])).unwrap();
    assert_eq!(r.changed_total(), 0, "{}", r.render_text());
}

#[test]
fn a_cap_in_the_record_caps_both_sides() {
    let f = Files::new();
    let mut v: serde_json::Value = serde_json::from_str(&record(
        "bob",
        &[],
        "127.0.0.1",
        &["repository:shared/app:pull,push"],
    ))
    .unwrap();
    v["cap"] = serde_json::json!(["repository:shared/**:pull"]);
    let log = f.log("a.log", &[v.to_string()]);
    // Capped at pull, bob gets pull under both policies.
    let r = replay(&f.opts("moved.yaml", Some("live.yaml"), vec![log])).unwrap();
    assert_eq!(r.changed_total(), 0, "{}", r.render_text());
}

#[test]
fn bad_input_is_an_error_and_long_lines_are_skipped() {
    let f = Files::new();
    std::fs::write(
        f.path("broken.yaml"),
        "rules:\n  - { match: { acount: x }, actions: [] }\n",
    )
    .unwrap();
    let log = f.log("a.log", &traffic());
    let e = replay(&f.opts("broken.yaml", None, vec![log.clone()])).unwrap_err();
    assert!(matches!(e, ReplayError::Policy(_)), "{e}");
    assert!(e.to_string().contains("acount"), "{e}");
    let e = replay(&f.opts("live.yaml", None, vec![f.path("missing.log")])).unwrap_err();
    assert!(matches!(e, ReplayError::Read { .. }), "{e}");
    let text_only = f.log("text.log", &["just text".to_string()]);
    let e = replay(&f.opts("live.yaml", None, vec![text_only])).unwrap_err();
    assert!(matches!(e, ReplayError::Nothing(_)), "{e}");

    let mut lines = traffic();
    lines.insert(0, format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_LINE + 10)));
    let log = f.log("long.log", &lines);
    let r = replay(&f.opts("moved.yaml", None, vec![log])).unwrap();
    assert_eq!(r.skipped, 2, "the long line and the text line");
    assert_eq!(r.records, 7);
}

#[test]
fn groups_are_bounded() {
    let f = Files::new();
    let one = record(
        "bob",
        &[],
        "127.0.0.1",
        &["repository:shared/app:pull,push"],
    );
    let lines: Vec<String> = (0..MAX_GROUPS + 5)
        .map(|i| one.replace("\"account\":\"bob\"", &format!("\"account\":\"u{i}\"")))
        .collect();
    // Every u{i} is granted pull,push by "shared for everyone" in both; make them change by
    // replaying with a policy that denies shared/.
    std::fs::write(
        f.path("deny.yaml"),
        "rules:\n  - { name: no, match: { name: \"shared/**\" }, actions: [] }\n",
    )
    .unwrap();
    let log = f.log("many.log", &lines);
    let r = replay(&f.opts("deny.yaml", None, vec![log])).unwrap();
    assert_eq!(r.changed_total() as usize, MAX_GROUPS + 5);
    assert_eq!(r.ungrouped, 5);
    assert_eq!(r.to_json()["groups"].as_array().unwrap().len(), MAX_GROUPS);
    assert!(r.render_text().contains("... and 5 more changed decisions"));
}

#[test]
fn name_patterns_follow_what_was_seen() {
    let pat = |names: &[&str]| {
        let mut p = NamePattern::new(names[0]);
        for n in &names[1..] {
            p.add(n);
        }
        p.render()
    };
    assert_eq!(pat(&["team/app"]), "team/app");
    assert_eq!(pat(&["team/app", "team/app"]), "team/app");
    assert_eq!(pat(&["team/app", "team/api"]), "team/ap*");
    assert_eq!(pat(&["team/app", "team/b/c"]), "team/**");
    assert_eq!(pat(&["team/app", "team/app/x"]), "team/**");
    assert_eq!(pat(&["a/x", "b/y"]), "**");
    assert_eq!(pat(&["alpine1", "alpine2"]), "alpine*");
    assert_eq!(pat(&["é/a", "ê/a"]), "**");
}

#[test]
fn labels_in_the_record_reach_rules_that_match_and_fill_them() {
    let f = Files::new();
    std::fs::write(
        f.path("labels.yaml"),
        "rules:\n  - name: own repository\n    match: { labels: { repository: \"acme/*\" }, name: \"${labels.repository}/**\" }\n    actions: [pull, push]\n",
    )
    .unwrap();
    // Recorded under the live policy (which knows no labels): nothing granted.
    let mut v: serde_json::Value = serde_json::from_str(&record(
        "github:acme/app",
        &[],
        "127.0.0.1",
        &["repository:acme/app/img:pull,push"],
    ))
    .unwrap();
    v["labels"] = serde_json::json!({"repository": "acme/app"});
    let log = f.log("a.log", &[v.to_string()]);
    let r = replay(&f.opts("labels.yaml", None, vec![log])).unwrap();
    assert_eq!(r.changed_total(), 1, "{}", r.render_text());
    assert!(
        r.render_text().contains("own repository"),
        "{}",
        r.render_text()
    );
    // Without the labels the rule matches nothing, so nothing changes.
    v.as_object_mut().unwrap().remove("labels");
    let log = f.log("b.log", &[v.to_string()]);
    let r = replay(&f.opts("labels.yaml", None, vec![log])).unwrap();
    assert_eq!(r.changed_total(), 0, "{}", r.render_text());
}
