//! What ships: every config file passes `ftpfront check`, the Dockerfile passes hadolint and
//! builds with the cargo command CI runs (without the demo feature), and the binary explains
//! itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::external::require_program;
use common::tls::TestPki;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn config_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["config", "config/examples"] {
        let entries = std::fs::read_dir(repo(dir)).unwrap_or_else(|e| panic!("read {dir}: {e}"));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Certificate paths in the examples point at /etc/ftpfront/tls: the test points them at
/// generated certificates through the environment, as an operator may.
#[test]
fn every_config_file_passes_check() {
    let pki = TestPki::generate();
    let files = config_files();
    assert!(
        files.len() >= 6,
        "reference, container and examples: {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read config");
        let mut check = Command::new(env!("CARGO_BIN_EXE_ftpfront"));
        check.args(["check", "--config"]).arg(&file);
        let tls_on = text.lines().map(str::trim).any(|line| {
            line.starts_with("mode = \"optional\"") || line.starts_with("mode = \"required\"")
        });
        if tls_on {
            check
                .env("FTPFRONT_TLS__CERT", &pki.server_cert)
                .env("FTPFRONT_TLS__KEY", &pki.server_key);
        }
        let out = check.output().expect("run ftpfront check");
        assert!(
            out.status.success(),
            "{} fails `ftpfront check`:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
    }
}

#[test]
fn dockerfile_builds_with_the_ci_cargo_command() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).expect("Dockerfile");
    let ci = std::fs::read_to_string(repo("scripts/test.sh")).expect("test script");
    let command = "cargo build --release --locked --no-default-features --bin ftpfront";
    assert!(
        dockerfile.contains(&format!("RUN {command}")),
        "Dockerfile build stage"
    );
    assert!(
        ci.lines().any(|line| line.trim() == command),
        "scripts/test.sh runs {command}"
    );
    for needed in [
        "USER 10001",
        "HEALTHCHECK",
        "EXPOSE 21 990 30000-30099 9477",
        "/etc/ftpfront/ftpfront.toml",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
}

/// The image ships the production binary: the default `demo` feature (libunftp) left out,
/// and no other feature turned back on.
#[test]
fn the_image_is_built_without_the_demo_feature() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).expect("Dockerfile");
    let builds: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.contains("cargo build"))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "one cargo build in the Dockerfile: {builds:?}"
    );
    let build = builds[0];
    assert!(build.contains("--no-default-features"), "{build}");
    for turned_on in ["--features", "--all-features", "-F "] {
        assert!(!build.contains(turned_on), "{build} turns on features");
    }
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).expect("Cargo.toml");
    let manifest: toml::Value = toml::from_str(&manifest).expect("Cargo.toml is TOML");
    let default = manifest["features"]["default"]
        .as_array()
        .expect("a default feature list");
    assert_eq!(
        default,
        &vec![toml::Value::from("demo")],
        "the default features are the demo alone: the production build needs none"
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = require_program("hadolint") else {
        return;
    };
    let out = Command::new(hadolint)
        .arg(repo("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_and_help_explain_the_binary() {
    let version = Command::new(env!("CARGO_BIN_EXE_ftpfront"))
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ftpfront "));
    let help = Command::new(env!("CARGO_BIN_EXE_ftpfront"))
        .arg("--help")
        .output()
        .expect("run --help");
    let text = String::from_utf8_lossy(&help.stdout);
    for subcommand in ["run", "check", "demo", "healthcheck"] {
        assert!(
            text.contains(subcommand),
            "--help lists {subcommand}:\n{text}"
        );
    }
}

#[test]
fn healthcheck_fails_without_a_server() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = unused.local_addr().expect("addr");
    drop(unused);
    let out = Command::new(env!("CARGO_BIN_EXE_ftpfront"))
        .args(["healthcheck", "--address", &addr.to_string()])
        .output()
        .expect("run healthcheck");
    assert!(!out.status.success());
}
