//! Property-based fuzzing of the configuration loaders of `crates/bin`:
//!
//! - `fly-autoscaler`: `FAS_*` environment variables (`Config::from_env`), the YAML file
//!   (`Config::apply_yaml`, with environment expansion), the command line (`parse_args`), Go
//!   durations, booleans and listen addresses, then `build_policy`/`engine_config` on whatever
//!   loaded;
//! - `fleetscale`: the TOML file (`native::load` on a real file, with `${VAR}` expansion),
//!   then `NativeTargets::build` on whatever loaded.
//!
//! Inputs are arbitrary strings and structured mutations of valid files (values replaced by
//! odd ones, lines dropped, duplicated or cut). The property: no panic; errors are values.
//! Any input that ever panics becomes a fixed case in `regressions`.

use fleetscale_bench::proptest_cases;
use fleetscale_config::{self as native, NativeTargets};
use fleetscale_fas::args::parse_args;
use fleetscale_fas::config::{parse_go_bool, parse_listen_addr, Config};
use fleetscale_fas::gocompat::{
    expand_env_keep_app_name, format_go_duration, parse_go_duration, parse_positive_duration,
};
use fleetscale_fas::{build_policy, engine_config};
use proptest::prelude::*;

const YAML: &str = "app-name: worker-app\n\
org: my-org\n\
regions: [ams, iad]\n\
process-group: app\n\
interval: 15s\n\
timeout: 30s\n\
concurrency: 4\n\
min-created-machine-count: \"1\"\n\
max-created-machine-count: \"min(queue_depth / 10, 20)\"\n\
started-machine-count: \"ceil(queue_depth / 10)\"\n\
initial-machine-state: stopped\n\
metric-collectors:\n\
\x20 - type: prometheus\n\
\x20   metric-name: queue_depth\n\
\x20   address: ${PROM_URL}\n\
\x20   query: sum(queue_depth{app='$APP_NAME'})\n\
\x20   token: ${PROM_TOKEN}\n";

/// The valid `fleetscale` file whose mutations the TOML cases load.
const TOML: &str = include_str!("fuzz_seeds/fleetscale.toml");

const FAS_KEYS: [&str; 20] = [
    "FAS_APP_NAME",
    "FAS_ORG",
    "FAS_REGIONS",
    "FAS_PROCESS_GROUP",
    "FAS_CREATED_MACHINE_COUNT",
    "FAS_MIN_CREATED_MACHINE_COUNT",
    "FAS_MAX_CREATED_MACHINE_COUNT",
    "FAS_STARTED_MACHINE_COUNT",
    "FAS_MIN_STARTED_MACHINE_COUNT",
    "FAS_MAX_STARTED_MACHINE_COUNT",
    "FAS_INITIAL_MACHINE_STATE",
    "FAS_INTERVAL",
    "FAS_TIMEOUT",
    "FAS_CONCURRENCY",
    "FAS_DRY_RUN",
    "FAS_METRICS_ADDR",
    "FAS_APP_LIST_REFRESH_INTERVAL",
    "FAS_PROMETHEUS_ADDRESS",
    "FAS_PROMETHEUS_METRIC_NAME",
    "FAS_PROMETHEUS_QUERY",
];

fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,16}",
        Just(String::new()),
        Just("-1".into()),
        Just("0".into()),
        Just("99999999999999999999999".into()),
        Just("1.5e308".into()),
        Just("nan".into()),
        Just("1h2m3.5s".into()),
        Just("-9223372036854775808ns".into()),
        Just("9223372036854775807h".into()),
        Just("${NOPE}".into()),
        Just("$APP_NAME".into()),
        Just("[".into()),
        Just("{".into()),
        Just("true".into()),
        Just("ams,,iad,".into()),
        Just(":99999".into()),
        Just("[::1]:9090".into()),
        Just("min(".into()),
        Just("'quoted'".into()),
        Just("é\u{0}\u{202e}".into()),
    ]
}

/// Replaces the value of one `key: value` / `key = value` line, drops, duplicates or cuts
/// lines.
#[derive(Clone, Debug)]
enum Edit {
    Value(prop::sample::Index, String),
    Drop(prop::sample::Index),
    Dup(prop::sample::Index),
    Cut(prop::sample::Index),
    Insert(prop::sample::Index, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<prop::sample::Index>();
    prop_oneof![
        (i.clone(), odd_value()).prop_map(|(i, v)| Edit::Value(i, v)),
        i.clone().prop_map(Edit::Drop),
        i.clone().prop_map(Edit::Dup),
        i.clone().prop_map(Edit::Cut),
        (i, odd_value()).prop_map(|(i, v)| Edit::Insert(i, v)),
    ]
}

fn apply(text: &str, edits: &[Edit], sep: char) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        match e {
            Edit::Value(i, v) => {
                let at = i.index(lines.len());
                if let Some(pos) = lines[at].find(sep) {
                    lines[at] = format!("{}{sep} {v}", &lines[at][..pos]);
                }
            }
            Edit::Drop(i) => {
                lines.remove(i.index(lines.len()));
            }
            Edit::Dup(i) => {
                let at = i.index(lines.len());
                let l = lines[at].clone();
                lines.insert(at, l);
            }
            Edit::Cut(i) => {
                let at = i.index(lines.len());
                let l = &lines[at];
                let mut cut = l.len() / 2;
                while !l.is_char_boundary(cut) {
                    cut -= 1;
                }
                lines[at] = l[..cut].to_owned();
            }
            Edit::Insert(i, v) => {
                let at = i.index(lines.len() + 1);
                lines.insert(at, v.clone());
            }
        }
    }
    lines.join("\n")
}

fn env(pairs: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    }
}

/// Everything downstream of a loaded fly-autoscaler config.
fn use_fas_config(c: &Config) {
    let _ = c.validate();
    let _ = c.validate_serve();
    let _ = c.metrics_socket_addr();
    let _ = c.is_wildcard();
    let _ = engine_config(c);
    let names: Vec<&str> = c
        .metric_collectors
        .iter()
        .map(|m| m.metric_name.as_str())
        .collect();
    let _ = build_policy(c, &names);
}

fn load_toml(text: &str, getenv: &dyn Fn(&str) -> Option<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fleetscale.toml");
    std::fs::write(&path, text).expect("write");
    if let Ok((cfg, expanded)) = native::load(&path, getenv) {
        let _ = NativeTargets::build(&path, &expanded, &cfg, getenv);
    }
}

/// Inputs that once broke a loader (none so far).
fn regressions() -> Vec<&'static str> {
    vec![
        "",
        "\u{0}",
        "[[target]]",
        "interval: 1e999s",
        "a: ${",
        "${}",
    ]
}

#[test]
fn valid_files_load() {
    let vars = vec![
        ("PROM_URL".to_owned(), "http://127.0.0.1:9090".to_owned()),
        ("PROM_TOKEN".to_owned(), "secret".to_owned()),
        ("MY_FLY_TOKEN".to_owned(), "FlyV1 fm2_x".to_owned()),
        ("APP".to_owned(), "other-app".to_owned()),
    ];
    let getenv = env(&vars);
    let mut c = Config::from_env(&getenv).unwrap();
    c.apply_yaml(YAML, &getenv).unwrap();
    assert_eq!(c.metric_collectors.len(), 1);
    use_fas_config(&c);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleetscale.toml");
    std::fs::write(&path, TOML).unwrap();
    let (cfg, expanded) = native::load(&path, &getenv).unwrap();
    assert_eq!(cfg.targets.len(), 2);
    NativeTargets::build(&path, &expanded, &cfg, &getenv).unwrap();
}

#[test]
fn regression_inputs_do_not_panic() {
    let no_env = |_: &str| None;
    for input in regressions() {
        let mut c = Config::from_env(&no_env).unwrap();
        if c.apply_yaml(input, &no_env).is_ok() {
            use_fas_config(&c);
        }
        load_toml(input, &no_env);
        let _ = parse_go_duration(input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(128), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fas_environment_never_panics(
        vars in prop::collection::vec((prop::sample::select(FAS_KEYS.to_vec()), odd_value()), 0..10),
    ) {
        let vars: Vec<(String, String)> = vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let getenv = env(&vars);
        let loaded = Config::from_env(&getenv);
        if let Ok(c) = loaded {
            use_fas_config(&c);
        }
    }

    #[test]
    fn fas_yaml_never_panics_on_mutations(
        edits in prop::collection::vec(edit(), 1..6),
        vars in prop::collection::vec((prop::sample::select(vec!["PROM_URL", "PROM_TOKEN", "APP_NAME", "X"]), odd_value()), 0..3),
    ) {
        let vars: Vec<(String, String)> = vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let getenv = env(&vars);
        let text = apply(YAML, &edits, ':');
        let mut c = Config::from_env(&|_: &str| None).unwrap();
        if c.apply_yaml(&text, &getenv).is_ok() {
            use_fas_config(&c);
        }
    }

    #[test]
    fn fas_yaml_never_panics_on_arbitrary_text(text in "(?s).{0,200}") {
        let mut c = Config::from_env(&|_: &str| None).unwrap();
        if c.apply_yaml(&text, &|_: &str| Some("x".into())).is_ok() {
            use_fas_config(&c);
        }
    }

    #[test]
    fn fas_command_line_never_panics(args in prop::collection::vec(prop_oneof![
        Just("serve".to_owned()), Just("eval".to_owned()), Just("version".to_owned()),
        Just("-config".to_owned()), Just("--config".to_owned()), Just("-config=x".to_owned()),
        Just("-h".to_owned()), Just("--".to_owned()), Just("-".to_owned()), ".{0,8}",
    ], 0..5)) {
        let _ = parse_args(&args);
    }

    #[test]
    fn go_scalars_never_panic(s in "(?s).{0,40}") {
        if let Ok(ns) = parse_go_duration(&s) {
            if ns > 0 && ns < i128::from(i64::MAX) {
                let d = std::time::Duration::from_nanos(ns as u64);
                // What Go prints, Go parses back to the same value.
                prop_assert_eq!(parse_go_duration(&format_go_duration(d)).ok(), Some(ns));
            }
        }
        let _ = parse_positive_duration(&s);
        let _ = parse_go_bool(&s);
        let _ = parse_listen_addr(&s);
        let _ = expand_env_keep_app_name(&s, |k| (k.len() % 2 == 0).then(|| "v".to_owned()));
    }

    #[test]
    fn native_toml_never_panics_on_mutations(
        edits in prop::collection::vec(edit(), 1..6),
        app in odd_value(),
    ) {
        let vars = vec![
            ("MY_FLY_TOKEN".to_owned(), "FlyV1 fm2_x".to_owned()),
            ("APP".to_owned(), app),
        ];
        load_toml(&apply(TOML, &edits, '='), &env(&vars));
    }

    #[test]
    fn native_toml_never_panics_on_arbitrary_text(text in "(?s).{0,200}") {
        load_toml(&text, &|_: &str| None);
    }
}
