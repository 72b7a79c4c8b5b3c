//! The README is the operator's manual: its configuration reference must name every key
//! of the real config struct, no key that does not exist, and each key's true default.

mod common;

use std::collections::BTreeMap;

use ftpfront::config::{BackendConfig, Config, PoolConfig, SplitHorizonRule};
use serde_json::Value;

const README: &str = include_str!("../README.md");
const REFERENCE_HEADING: &str = "## Configuration reference";

/// Every key path of the config struct (arrays of tables as `backends.name`) with its
/// default serialised as JSON (`null` for optional keys without a default).
fn struct_keys() -> BTreeMap<String, Value> {
    let mut keys = BTreeMap::new();
    let to_json = |value: Result<Value, serde_json::Error>| value.expect("config serialises");
    flatten(
        "",
        &to_json(serde_json::to_value(Config::default())),
        &mut keys,
    );
    // Arrays of tables are empty by default: take their element type's keys.
    for (array, element) in [
        (
            "backends",
            to_json(serde_json::to_value(BackendConfig::default())),
        ),
        (
            "pools",
            to_json(serde_json::to_value(PoolConfig::default())),
        ),
        (
            "passive.public_address_by_client",
            to_json(serde_json::to_value(SplitHorizonRule::default())),
        ),
    ] {
        keys.remove(array);
        flatten(array, &element, &mut keys);
    }
    keys
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        // A non-empty object is a section; an empty one is a map-valued key (routing.users).
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, child, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), value.clone());
        }
    }
}

/// The reference section's table rows as (key, default cell).
fn readme_rows() -> Vec<(String, String)> {
    let start = README
        .find(REFERENCE_HEADING)
        .expect("README has a configuration reference");
    let section = &README[start + REFERENCE_HEADING.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells[1].trim_matches('`').to_string();
            (key, cells[2].to_string())
        })
        .collect()
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let keys = struct_keys();
    let rows = readme_rows();
    let documented: Vec<&str> = rows.iter().map(|(key, _)| key.as_str()).collect();
    let missing: Vec<&String> = keys
        .keys()
        .filter(|key| !documented.contains(&key.as_str()))
        .collect();
    let unknown: Vec<&&str> = documented
        .iter()
        .filter(|key| !keys.contains_key(**key))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README configuration reference out of date.\nnot documented: {missing:?}\nnot a config key: {unknown:?}"
    );
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<&&str> = documented.iter().filter(|k| !seen.insert(**k)).collect();
    assert!(twice.is_empty(), "documented twice: {twice:?}");
}

#[test]
fn documented_defaults_are_the_real_defaults() {
    let keys = struct_keys();
    let mut wrong = Vec::new();
    for (key, cell) in readme_rows() {
        let Some(default) = keys.get(&key) else {
            continue; // reported by the other test
        };
        if cell == "required" {
            continue; // validation insists on a value; the struct's is a placeholder
        }
        let real = match default {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) if !items.is_empty() => {
                let items: Vec<String> = items
                    .iter()
                    .map(|item| item.as_str().map_or(item.to_string(), str::to_string))
                    .collect();
                items.join(", ")
            }
            // Optional and required keys: the README explains in words.
            _ => {
                if cell.starts_with('`') {
                    wrong.push(format!("{key}: README says {cell}, but it has no default"));
                }
                continue;
            }
        };
        if cell != format!("`{real}`") {
            wrong.push(format!(
                "{key}: README says {cell}, the default is `{real}`"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong defaults in README:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_metric_is_in_the_readme_metrics_table() {
    let metrics = ftpfront::metrics::Metrics::new();
    metrics.init_known_series(&["b".to_string()]);
    metrics.init_proxy_protocol_series(true);
    let text = metrics.render();
    let names: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ftpfront_"))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let undocumented: Vec<&&str> = names
        .iter()
        .filter(|name| !README.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from README's table: {undocumented:?}"
    );
}

/// The fenced block that follows `label` (a line of its own) in the README.
fn block_after(label: &str) -> String {
    let start = README
        .find(&format!("\n{label}\n"))
        .unwrap_or_else(|| panic!("README has no `{label}` paragraph"));
    let rest = &README[start..];
    let open = rest.find("```").expect("a fenced block follows");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].to_string()
}

/// A network namespace of the test's own, removed on drop.
struct Namespace(String);

impl Namespace {
    fn create() -> Namespace {
        let name = format!("ffreadme{}", std::process::id());
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {name}");
        Namespace(name)
    }

    /// Runs `program args` inside the namespace; its stdout, or a panic with stderr.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .expect("run ip netns exec");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{program} {args:?}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// The forwarding rules the README gives for iptables and nftables load as written, in a
/// scratch network namespace (nothing outside it changes), and forward what they promise.
#[test]
fn readme_forwarding_rules_load_in_a_scratch_namespace() {
    use common::external::{external_available, find_program, is_root};
    let tools = ["ip", "iptables", "nft"].map(|p| find_program(p).is_some());
    let ready = is_root() && tools.iter().all(|found| *found);
    if !external_available(ready, "root, ip, iptables and nft (network namespaces)") {
        return;
    }
    let ns = Namespace::create();

    ns.run("sh", &["-ec", &block_after("iptables:")]);
    let nat = ns.run("iptables", &["-t", "nat", "-S", "PREROUTING"]);
    assert!(
        nat.contains("--dports 21,990,30000:30099") && nat.contains("--to-destination 10.10.0.2"),
        "{nat}"
    );
    let forward = ns.run("iptables", &["-S", "FORWARD"]);
    assert!(forward.contains("-d 10.10.0.2/32"), "{forward}");

    let rules = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(rules.path(), block_after("nftables:")).expect("write rules");
    let path = rules.path().to_str().expect("utf-8 path");
    ns.run("nft", &["-f", path]);
    let table = ns.run("nft", &["list", "table", "ip", "ftpfront"]);
    assert!(
        table.contains("dnat to 10.10.0.2") && table.contains("30000-30099"),
        "{table}"
    );
}
