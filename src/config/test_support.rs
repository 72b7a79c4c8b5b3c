//! Test helpers shared by the config unit tests: sample texts and error assertions.

use std::io::Write;

use super::{Config, Problem};

/// One valid backend, prepended to the texts that have none.
pub(super) const ONE_BACKEND: &str = "[[backends]]\nname = \"main\"\naddress = \"10.0.0.5:21\"\n";

pub(super) fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

pub(super) fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The rendered messages of an invalid config text (with one backend added
/// unless the text has its own).
pub(super) fn errors(text: &str) -> Vec<String> {
    let text = if text.contains("[[backends]]") {
        text.to_string()
    } else {
        format!("{ONE_BACKEND}{text}")
    };
    match Config::from_toml_str(&text) {
        Ok(config) => panic!("expected an error for\n{text}\ngot {config:#?}"),
        Err(error) => error.problems().iter().map(Problem::to_string).collect(),
    }
}

/// Asserts exactly one problem, whose message names `key` and contains `fragment`.
pub(super) fn assert_error(text: &str, key: &str, fragment: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = &errors[0];
    assert!(
        error.contains(&format!(" {key}: ")),
        "{error:?} should name {key}"
    );
    assert!(
        error.contains(fragment),
        "{error:?} should contain {fragment:?}"
    );
}

pub(super) fn design_example() -> String {
    // The configuration contract's example (ARCHITECTURE.md, "Contracts users depend on")
    // with the later-work keys at their inert values.
    r#"
[listen]
control = "0.0.0.0:21"            # plain FTP + explicit AUTH TLS
proxy_protocol = false            # expect a PROXY v1/v2 header (from a load balancer)
proxy_protocol_from = []          # only these peers may send one

[passive]
ports = "30000-30099"             # the range the NAT forwards; inclusive
public_address = "203.0.113.10"   # written into 227 replies; omit to use the local address
bind = "0.0.0.0"
multiplex = true                  # share a port between different client IPs (see above)
# advertised_ports = "50000-50099"  # what 227/229 announce when the NAT/LB translates ports
# [[passive.public_address_by_client]]  # split horizon: LAN clients get the private address
# clients = ["192.168.0.0/16"]
# address = "192.168.1.10"

[tls]
mode = "off"                      # off | optional | required (required: no USER before AUTH TLS)

[[backends]]
name = "legacy"
address = "10.0.0.5:21"
tls = "none"                      # none | explicit | implicit
data_mode = "passive"             # passive | active
use_control_address = true        # ignore the address in the backend's 227 reply
proxy_protocol = "off"            # off | v1 | v2: PROXY header on the backend control connection

[routing]
default = "legacy"
policy = "round_robin"            # among backends of a group: round_robin | least_conn | random | first
users = { alice = "legacy" }      # user -> backend name; USER name@backend also accepted if allowed

[metrics]
listen = "127.0.0.1:9477"

[limits]
max_sessions = 10000
max_sessions_per_ip = 64
idle_timeout = "300s"
data_accept_timeout = "30s"
max_line_length = 4096
allow = ["0.0.0.0/0", "::/0"]
deny = []
client_active_mode = "same_ip"   # deny | same_ip (no bounce) | any
"#
    .to_string()
}

pub(super) fn errors_free(text: &str) -> Config {
    Config::from_toml_str(&format!("{ONE_BACKEND}{text}")).unwrap()
}

pub(super) fn assert_single(config: &Config, expected: &str) {
    let error = config.validate().unwrap_err();
    assert_eq!(error.problems().len(), 1, "{error}");
    assert!(error.to_string().starts_with(expected), "{error}");
}
