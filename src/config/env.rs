//! `FTPFRONT_<SECTION>__<KEY>` environment variables: which count, and the nested dictionary they override.

use figment::value::{Dict, Value};

const ENV_PREFIX: &str = "FTPFRONT_";
/// Separates section and key in env names. Requiring it is what keeps the
/// variables Kubernetes derives from a Service named `ftpfront` (`FTPFRONT_PORT`,
/// `FTPFRONT_SERVICE_HOST`, `FTPFRONT_PORT_21_TCP_ADDR`, ...) out of the config.
const ENV_SEPARATOR: &str = "__";

pub(super) fn process_env() -> Vec<(String, String)> {
    // vars() would panic on a non-UTF-8 variable anywhere in the environment;
    // a mangled FTPFRONT_ value instead fails to parse and names its variable.
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            Some((name, value.to_string_lossy().into_owned()))
        })
        .collect()
}

/// One `FTPFRONT_<SECTION>__<KEY>` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EnvVar {
    pub(super) name: String,
    pub(super) path: Vec<String>,
    value: String,
}

pub(super) fn env_overrides<I>(vars: I) -> Vec<EnvVar>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut overrides: Vec<EnvVar> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            if !rest.contains(ENV_SEPARATOR) {
                return None;
            }
            let path = rest
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            Some(EnvVar { name, path, value })
        })
        .collect();
    // Deterministic precedence when two names map to the same key.
    overrides.sort_by(|a, b| a.name.cmp(&b.name));
    overrides
}

/// The env overrides as one nested dictionary, values parsed like figment's `Env`
/// provider does ("10" is a number, "true" a bool, "[a, b]" an array, else a string).
pub(super) fn env_dict(overrides: &[EnvVar]) -> Dict {
    let mut dict = Dict::new();
    for var in overrides {
        let value = match var.value.parse::<Value>() {
            Ok(value) => value,
            Err(never) => match never {},
        };
        insert_nested(&mut dict, &var.path, value);
    }
    dict
}

fn insert_nested(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if entry.as_dict().is_none() {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert_nested(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{Config, PortRange};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Serialises the tests that touch the process environment.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    #[test]
    fn env_overrides_file() {
        let file = config_file(&format!(
            "{ONE_BACKEND}[passive]\nports = \"30000-30099\"\n"
        ));
        let env = vars(&[
            ("FTPFRONT_PASSIVE__PUBLIC_ADDRESS", "203.0.113.10"),
            ("FTPFRONT_LIMITS__IDLE_TIMEOUT", "10s"),
            ("FTPFRONT_PASSIVE__PORTS", "30000-30010"),
            ("FTPFRONT_LIMITS__MAX_SESSIONS", "5"),
            ("FTPFRONT_PASSIVE__MULTIPLEX", "false"),
            ("FTPFRONT_LOG__FILTER", "info,ftpfront=debug"),
            ("FTPFRONT_LIMITS__ALLOW", "[10.0.0.0/8, \"192.168.0.0/16\"]"),
            ("FTPFRONT_ROUTING__USERS__ALICE", "main"),
            ("OTHER__VARIABLE", "ignored"),
        ]);
        let config = Config::load_with_vars(file.path(), env).unwrap();
        assert_eq!(
            config.passive.public_address,
            Some("203.0.113.10".parse().unwrap())
        );
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(10));
        assert_eq!(config.passive.ports, PortRange::new(30000, 30010).unwrap());
        assert_eq!(config.limits.max_sessions, 5);
        assert!(!config.passive.multiplex);
        assert_eq!(config.log.filter, "info,ftpfront=debug");
        assert_eq!(config.limits.allow.len(), 2);
        assert_eq!(config.routing.users["alice"], "main");
        // Untouched keys keep file values and defaults.
        assert_eq!(config.backends[0].name, "main");
        assert_eq!(config.limits.max_line_length, 4096);
    }

    #[test]
    fn env_single_port_number_is_a_range() {
        let file = config_file(ONE_BACKEND);
        let env = vars(&[("FTPFRONT_PASSIVE__PORTS", "30000")]);
        let config = Config::load_with_vars(file.path(), env).unwrap();
        assert_eq!(config.passive.ports, PortRange::new(30000, 30000).unwrap());
    }

    #[test]
    fn kubernetes_service_variables_are_ignored() {
        let file = config_file(ONE_BACKEND);
        let env = vars(&[
            ("FTPFRONT_PORT", "tcp://10.96.0.12:21"),
            ("FTPFRONT_SERVICE_HOST", "10.96.0.12"),
            ("FTPFRONT_SERVICE_PORT", "21"),
            ("FTPFRONT_SERVICE_PORT_FTP", "21"),
            ("FTPFRONT_PORT_21_TCP", "tcp://10.96.0.12:21"),
            ("FTPFRONT_PORT_21_TCP_ADDR", "10.96.0.12"),
            ("FTPFRONT_PORT_21_TCP_PORT", "21"),
            ("FTPFRONT_PORT_21_TCP_PROTO", "tcp"),
        ]);
        let config = Config::load_with_vars(file.path(), env).unwrap();
        assert_eq!(config, Config::from_toml_str(ONE_BACKEND).unwrap());
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let file = config_file(ONE_BACKEND);
        let cases = [
            (
                "FTPFRONT_PASSIVE__PUBLIC_ADDRESS",
                "not-an-ip",
                "passive.public_address",
            ),
            ("FTPFRONT_PASSIVE__PORTS", "10-5", "passive.ports"),
            (
                "FTPFRONT_LIMITS__IDLE_TIMEOUT",
                "soon",
                "limits.idle_timeout",
            ),
            (
                "FTPFRONT_LIMITS__MAX_LINE_LENGTH",
                "100",
                "limits.max_line_length",
            ),
            ("FTPFRONT_PASSIVE__PORTZ", "1-2", "passive.portz"),
            ("FTPFRONT_NOSUCH__KEY", "1", "nosuch"),
        ];
        for (name, value, key) in cases {
            let error = Config::load_with_vars(file.path(), vars(&[(name, value)])).unwrap_err();
            let message = error.to_string();
            let expected = format!("environment variable {name} ({key}): ");
            assert!(message.starts_with(&expected), "{name}: {message}");
        }
    }

    #[test]
    fn process_environment_is_read() {
        let _guard = ENV_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let file = config_file(ONE_BACKEND);
        // A value harmless to any other test that loads a config meanwhile.
        std::env::set_var("FTPFRONT_LOG__FILTER", "info,ftpfront=info");
        std::env::set_var("FTPFRONT_SERVICE_HOST", "10.96.0.12");
        std::env::set_var("FTPFRONT_PORT_21_TCP_ADDR", "10.96.0.12");
        let result = Config::load(file.path());
        std::env::remove_var("FTPFRONT_LOG__FILTER");
        std::env::remove_var("FTPFRONT_SERVICE_HOST");
        std::env::remove_var("FTPFRONT_PORT_21_TCP_ADDR");
        assert_eq!(result.unwrap().log.filter, "info,ftpfront=info");
    }
}
