//! The configuration loaders: fly-autoscaler's YAML (with environment expansion) and
//! fleetscale's TOML (with `${VAR}` expansion), then building policies and targets: never
//! panics.
#![no_main]

use std::path::Path;

use fleetscale_fas::config::Config;
use fleetscale_fas::{build_policy, engine_config};
use fleetscale_config::{self as native, NativeTargets};
use libfuzzer_sys::fuzz_target;

fn getenv(k: &str) -> Option<String> {
    (k.len() % 2 == 0).then(|| format!("v-{k}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut c) = Config::from_env(&|_: &str| None) {
        if c.apply_yaml(text, &getenv).is_ok() {
            let _ = c.validate();
            let _ = engine_config(&c);
            let names: Vec<&str> = c
                .metric_collectors
                .iter()
                .map(|m| m.metric_name.as_str())
                .collect();
            let _ = build_policy(&c, &names);
        }
    }
    let path = Path::new("fuzz.toml");
    if let Ok(expanded) = native::ConfigText::expand(path, text, &getenv) {
        if let Ok(cfg) = toml::from_str::<native::FileConfig>(&expanded.expanded) {
            let _ = NativeTargets::build(path, &expanded, &cfg, &getenv);
        }
    }
});
