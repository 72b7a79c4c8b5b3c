//! Fuzzes config loading (`Config::from_toml_str`, `Config::load_with_vars`) with arbitrary UTF-8: errors are fine, panics are not.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ftpfront::config::Config;
use libfuzzer_sys::fuzz_target;

/// One scratch file per fuzzing process, for the file-reading entry point.
fn scratch_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("ftpfront-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Config::from_toml_str(text);

    // Reading the same text from a file (no environment) decides the same way.
    std::fs::write(scratch_file(), text).expect("write scratch config");
    let loaded = Config::load_with_vars(scratch_file(), Vec::new());
    match (&parsed, &loaded) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "file and string loading differ"),
        (Err(_), Err(_)) => {}
        _ => panic!("file and string loading disagree: {parsed:?} vs {loaded:?}"),
    }

    match parsed {
        Err(error) => {
            let _ = (error.to_string(), error.problems().len());
        }
        Ok(config) => {
            assert!(
                config.validate().is_ok(),
                "a loaded config does not validate"
            );
            let _ = (config.default_backend(), config.backend("a"));
            // `ftpfront check` prints the effective config: it loads back as the same one,
            // secrets masked.
            let rendered = config.render_effective();
            let mut expected = config.clone();
            if expected.metrics.basic_auth_password.is_some() {
                expected.metrics.basic_auth_password = Some("****".to_string());
            }
            match Config::from_toml_str(&rendered) {
                Ok(again) => assert_eq!(again, expected, "{rendered}"),
                Err(error) => panic!("effective config does not load: {error}\n{rendered}"),
            }
        }
    }
});
