//! The README is the operator's manual: its configuration reference must name every key
//! of the real config struct, no key that does not exist, and each key's true default.

use std::collections::BTreeMap;

use ftpfront::config::{BackendConfig, Config, SplitHorizonRule};
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
