//! Loading: defaults <- TOML file (or text) <- env overrides via figment, then validation, with problems located.

use std::path::Path;

use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;

use super::env::{env_dict, env_overrides, process_env, EnvVar};
use super::problem::{find_line, line_column};
use super::routing::users_file_order;
use super::{Config, ConfigError, Origin, Problem};

/// The file name shown in errors for [`Config::from_toml_str`].
const INLINE_SOURCE: &str = "<toml>";

impl Config {
    /// defaults <- TOML file <- FTPFRONT_<SECTION>__<KEY> env vars, then validate()
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_vars(path, process_env())
    }

    /// [`Config::load`] with the environment given explicitly (tests, embedding).
    pub fn load_with_vars<I>(path: &Path, vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let source = Source {
            name: path.display().to_string(),
            text: &text,
            env: env_overrides(vars),
        };
        source.parse()
    }

    /// defaults <- TOML text (no env), then validate(); used by tests
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let source = Source {
            name: INLINE_SOURCE.to_string(),
            text,
            env: Vec::new(),
        };
        source.parse()
    }
}

/// One load: the TOML text, its name for messages, and the env overrides on top.
struct Source<'a> {
    name: String,
    text: &'a str,
    env: Vec<EnvVar>,
}

impl Source<'_> {
    fn parse(&self) -> Result<Config, ConfigError> {
        let table = self.check_syntax()?;
        let figment =
            Figment::from(Toml::string(self.text)).merge(Serialized::defaults(env_dict(&self.env)));
        let mut config: Config = figment.extract().map_err(|error| {
            self.locate(ConfigError::Invalid(
                error.into_iter().map(problem_from_figment).collect(),
            ))
        })?;
        config.routing.users_order = users_file_order(&table);
        config.validate().map_err(|error| self.locate(error))?;
        Ok(config)
    }

    /// Syntax first, with toml's own span: figment's error would lose the column. The
    /// table keeps the file's key order, which figment's sorted maps lose.
    fn check_syntax(&self) -> Result<toml::Table, ConfigError> {
        let error = match toml::from_str::<toml::Table>(self.text) {
            Ok(table) => return Ok(table),
            Err(error) => error,
        };
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = line_column(self.text, offset);
        Err(ConfigError::Syntax {
            file: self.name.clone(),
            line,
            column,
            message: error.message().trim().replace('\n', "; "),
        })
    }

    fn locate(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid(problems) => ConfigError::Invalid(
                problems
                    .into_iter()
                    .map(|problem| Problem {
                        origin: Some(self.origin_of(&problem.path)),
                        ..problem
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// Env overrides the file, so a key an env var sets (or lies under) came from it.
    fn origin_of(&self, path: &[String]) -> Origin {
        let from_env = self.env.iter().rev().find(|var| {
            !path.is_empty() && (path.starts_with(&var.path) || var.path.starts_with(path))
        });
        match from_env {
            Some(var) => Origin::Env {
                var: var.name.clone(),
            },
            None => Origin::File {
                file: self.name.clone(),
                line: find_line(self.text, path),
            },
        }
    }
}

fn problem_from_figment(error: figment::Error) -> Problem {
    let message = match &error.kind {
        Kind::UnknownField(found, expected) => unknown_message("key", found, expected),
        Kind::UnknownVariant(found, expected) => unknown_message("value", found, expected),
        kind => duration_hint(kind.to_string()),
    };
    Problem {
        path: error.path,
        message,
        origin: None,
    }
}

/// humantime_serde only says "expected a duration"; show what one looks like.
fn duration_hint(message: String) -> String {
    if message.ends_with("expected a duration") {
        format!("{message} such as \"30s\", \"5m\" or \"1h 30m\"")
    } else {
        message
    }
}

fn unknown_message(what: &str, found: &str, expected: &[&str]) -> String {
    if expected.is_empty() {
        format!("unknown {what} `{found}`")
    } else {
        format!(
            "unknown {what} `{found}`; expected one of: {}",
            expected.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::{
        BackendConfig, ClientActiveMode, DataMode, LogFormat, PassiveConfig, PortRange,
    };
    use std::time::Duration;

    #[test]
    fn minimal_file_is_defaults_plus_backend() {
        let config = Config::from_toml_str(ONE_BACKEND).unwrap();
        let expected = Config {
            backends: vec![BackendConfig {
                name: "main".into(),
                address: "10.0.0.5:21".into(),
                ..BackendConfig::default()
            }],
            ..Config::default()
        };
        assert_eq!(config, expected);
        assert_eq!(config.default_backend(), Some("main"));
    }

    #[test]
    fn partial_section_keeps_other_defaults() {
        let text = format!("{ONE_BACKEND}[passive]\npublic_address = \"203.0.113.10\"\n");
        let config = Config::from_toml_str(&text).unwrap();
        assert_eq!(
            config.passive.public_address,
            Some("203.0.113.10".parse().unwrap())
        );
        assert_eq!(config.passive.ports, PassiveConfig::default().ports);
        assert!(config.passive.multiplex);
    }

    #[test]
    fn design_example_parses() {
        let config = Config::from_toml_str(&design_example()).unwrap();
        assert_eq!(
            config.passive.public_address,
            Some("203.0.113.10".parse().unwrap())
        );
        assert_eq!(config.backends.len(), 1);
        assert_eq!(config.backend("legacy").unwrap().address, "10.0.0.5:21");
        assert_eq!(
            config.routing.users.get("alice").map(String::as_str),
            Some("legacy")
        );
        assert_eq!(config.default_backend(), Some("legacy"));
    }

    #[test]
    fn example_file_loads() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/ftpfront.toml"));
        let config = Config::load_with_vars(path, Vec::new()).unwrap();
        assert_eq!(
            config.passive.public_address,
            Some("203.0.113.10".parse().unwrap())
        );
        assert_eq!(config.default_backend(), Some("legacy"));
        // Apart from the documented example values, the file shows the defaults.
        let expected = Config {
            passive: PassiveConfig {
                public_address: config.passive.public_address,
                ..PassiveConfig::default()
            },
            backends: config.backends.clone(),
            routing: config.routing.clone(),
            ..Config::default()
        };
        assert_eq!(config, expected);
        let backend = &config.backends[0];
        let expected_backend = BackendConfig {
            name: "legacy".into(),
            address: "10.0.0.5:21".into(),
            ..BackendConfig::default()
        };
        assert_eq!(backend, &expected_backend);
    }

    #[test]
    fn all_values_parse() {
        let text = r#"
[listen]
control = "[::]:2121"
[passive]
ports = 30000
advertised_ports = "50000"
public_address = "2001:db8::10"
multiplex = false
[[passive.public_address_by_client]]
clients = ["192.168.0.0/16", "10.0.0.0/8"]
address = "192.168.1.10"
[[backends]]
name = "a"
address = "ftp.internal:2121"
data_mode = "active"
active_address = "10.0.0.2"
active_ports = "40000-40009"
connect_timeout = "1m 30s"
reply_timeout = "2m"
[[backends]]
name = "b"
address = "[2001:db8::5]:21"
use_control_address = false
[routing]
default = "b"
users = { alice = "a", "bob.smith" = "b" }
[limits]
deny = ["192.0.2.0/24"]
client_active_mode = "any"
[log]
format = "json"
filter = "info,ftpfront=debug"
"#;
        let config = Config::from_toml_str(text).unwrap();
        assert_eq!(config.listen.control, "[::]:2121".parse().unwrap());
        assert_eq!(config.passive.ports, PortRange::new(30000, 30000).unwrap());
        assert_eq!(config.passive.public_address_by_client[0].clients.len(), 2);
        let a = config.backend("a").unwrap();
        assert_eq!(a.data_mode, DataMode::Active);
        assert_eq!(a.active_ports, Some(PortRange::new(40000, 40009).unwrap()));
        assert_eq!(a.connect_timeout, Duration::from_secs(90));
        assert!(!config.backend("b").unwrap().use_control_address);
        assert_eq!(config.routing.users["bob.smith"], "b");
        assert_eq!(config.default_backend(), Some("b"));
        assert_eq!(config.limits.client_active_mode, ClientActiveMode::Any);
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(config.backend("c").is_none());
    }

    #[test]
    fn syntax_error_has_file_line_column() {
        let file = config_file("[listen]\ncontrol = \"0.0.0.0:21\"\nbroken = = 3\n");
        let error = Config::load_with_vars(file.path(), Vec::new()).unwrap_err();
        let message = error.to_string();
        let prefix = format!("{}:3:10: invalid TOML: ", file.path().display());
        assert!(message.starts_with(&prefix), "{message}");
        assert!(matches!(
            error,
            ConfigError::Syntax {
                line: 3,
                column: 10,
                ..
            }
        ));
        assert!(!message.contains('\n'), "{message}");

        let inline = Config::from_toml_str("[passive\n").unwrap_err().to_string();
        assert!(inline.starts_with("<toml>:1:"), "{inline}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = format!("{ONE_BACKEND}\n[passive]\nports = \"30000-30009\"\nportz = \"1-2\"\n");
        let file = config_file(&text);
        let message = Config::load_with_vars(file.path(), Vec::new())
            .unwrap_err()
            .to_string();
        let expected = format!(
            "{}:7: passive.portz: unknown key `portz`",
            file.path().display()
        );
        assert!(message.starts_with(&expected), "{message}");
        assert!(
            message.contains("public_address"),
            "lists valid keys: {message}"
        );
    }

    #[test]
    fn unknown_keys_everywhere_are_errors() {
        assert_error(
            "[pasive]\nports = \"1-2\"\n",
            "pasive",
            "unknown key `pasive`",
        );
        assert_error(
            "[[backends]]\nname = \"a\"\naddress = \"h:21\"\ntimeout = \"1s\"\n",
            "backends[0].timeout",
            "unknown key",
        );
        assert_error(
            "[routing]\nfallback = \"x\"\n",
            "routing.fallback",
            "unknown key",
        );
        assert_error(
            "[passive]\npublic_address_by_client = [{ clients = [], adress = \"192.0.2.1\" }]\n",
            "passive.public_address_by_client[0].adress",
            "unknown key",
        );
        assert_error(
            "[tls]\nmode = \"on\"\n",
            "tls.mode",
            "unknown value `on`; expected one of: off, optional, required",
        );
    }

    #[test]
    fn type_errors_name_key_and_line() {
        let text = format!("{ONE_BACKEND}[limits]\nmax_sessions = \"many\"\n");
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("<toml>:5: limits.max_sessions: invalid type"),
            "{errors:?}"
        );

        assert_error(
            "[limits]\nidle_timeout = \"soon\"\n",
            "limits.idle_timeout",
            "such as \"30s\"",
        );
        assert_error(
            "[limits]\nidle_timeout = 300\n",
            "limits.idle_timeout",
            "such as \"30s\"",
        );
        assert_error(
            "[limits]\nallow = [\"10.0.0.0/33\"]\n",
            "limits.allow[0]",
            "invalid",
        );
        assert_error(
            "[passive]\npublic_address = \"ftp.example.com\"\n",
            "passive.public_address",
            "invalid",
        );
        assert_error(
            "[listen]\ncontrol = \"0.0.0.0\"\n",
            "listen.control",
            "invalid",
        );
    }

    #[test]
    fn error_line_points_into_the_right_array_element() {
        let text = "[[backends]]\nname = \"a\"\naddress = \"h:21\"\n\n[[backends]]\nname = \"a\"\naddress = \"h:21\"\n[routing]\ndefault = \"a\"\n";
        let errors = errors(text);
        assert_eq!(errors, vec!["<toml>:6: backends[1].name: duplicate backend name \"a\" (also used by backends[0]); names must be unique".to_string()]);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let error = Config::load_with_vars(Path::new("/nonexistent/ftpfront.toml"), Vec::new())
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("cannot read configuration file /nonexistent/ftpfront.toml: "),
            "{message}"
        );
    }
}
