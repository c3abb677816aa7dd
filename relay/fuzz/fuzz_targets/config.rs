//! The configuration file: any text as a TOML file, then merged and validated as the
//! server would at start (no privileges needed, nothing bound). No panic: bad input is an
//! error with a reason.
#![no_main]
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use xturn_relay::config::{Args, FileConfig, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    let args = Args::try_parse_from(["xturn"]).expect("no arguments parse");
    if let Err(e) = Settings::merge(args, file) {
        assert!(!format!("{e:#}").is_empty());
    }
});
