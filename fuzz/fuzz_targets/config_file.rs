//! The TOML configuration file: any text either parses or is a `Config` error; a parsed
//! file applies to a configuration without panicking, validation never panics, and a valid
//! result saves to TOML that parses back to the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websockex_nova::config_file::ConfigFile;
use websockex_nova::{ClientConfig, ErrorKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match ConfigFile::parse(text) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(*e.kind(), ErrorKind::Config, "{e}");
            return;
        }
    };
    let mut config = ClientConfig::new("ws://127.0.0.1:1/");
    file.apply(&mut config);
    if config.validate().is_err() {
        return;
    }
    let saved = ConfigFile::from_config(&config).to_toml();
    let Ok(saved) = saved else { return };
    let mut back = ClientConfig::new("ws://placeholder/");
    ConfigFile::parse(&saved)
        .unwrap_or_else(|e| panic!("saved config does not parse: {e}\n{saved}"))
        .apply(&mut back);
    assert_eq!(back, config, "{saved}");
});
