//! Helpers shared by the observability tests (tests/observability.rs, tests/prometheus.rs):
//! running the Prometheus tools, and the PromQL expressions of the dashboard and their metric
//! selectors.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A file of the repository, e.g. `dashboards/alerts.yml`.
pub fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Runs `program args`, optionally feeding `stdin`; panics with its output unless it exits 0.
pub fn run_ok(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{} {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

pub fn write_temp(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Every PromQL expression of dashboards/ftpfront.json as `(where, expr)`: each panel target
/// (rows' nested panels included) and each template variable query.
pub fn dashboard_exprs() -> Vec<(String, String)> {
    let path = repo_file("dashboards/ftpfront.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_string()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = variable["name"].as_str().unwrap_or("?");
        let query = match &variable["query"] {
            serde_json::Value::Object(q) => q.get("query").and_then(|q| q.as_str()),
            q => q.as_str(),
        };
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            out.push((format!("variable {name:?}"), query.to_string()));
        }
    }
    out
}

/// The `ftpfront_*` vector selectors in a PromQL expression (metric name plus its label
/// matchers, if any), with the Grafana variable `$backend` replaced by `.*`.
pub fn metric_selectors(expr: &str) -> Vec<String> {
    let expr = expr.replace("${backend}", ".*").replace("$backend", ".*");
    let bytes = expr.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_name(bytes[i - 1]);
        if !(at_word_start && expr[i..].starts_with("ftpfront_")) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_name(bytes[i]) {
            i += 1;
        }
        if bytes.get(i) == Some(&b'{') {
            // Up to the closing brace outside a quoted label value.
            let mut quote = None;
            while i < bytes.len() {
                let b = bytes[i];
                i += 1;
                match quote {
                    Some(_) if b == b'\\' => i += 1,
                    Some(q) if b == q => quote = None,
                    Some(_) => {}
                    None if b == b'"' || b == b'\'' || b == b'`' => quote = Some(b),
                    None if b == b'}' => break,
                    None => {}
                }
            }
        }
        let selector = expr[start..i.min(bytes.len())].to_string();
        if !out.contains(&selector) {
            out.push(selector);
        }
    }
    out
}

/// The names of the alerting rules in dashboards/alerts.yml (`- alert: Name` lines).
pub fn alert_names() -> Vec<String> {
    let path = repo_file("dashboards/alerts.yml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().trim_matches('"').to_string())
        .collect()
}
