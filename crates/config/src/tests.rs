//! Unit tests of reading, checking and building configuration files.

use std::path::Path;
use std::time::Duration;

use fleetscale_core::InitialState;

use crate::*;

const TOKEN: &str = "FlyV1 fm2_unit_test_token_value";

/// The variables the tests' files use.
fn env(k: &str) -> Option<String> {
    match k {
        "TOKEN" => Some("s3cret-prom-token".into()),
        "FLY_API_TOKEN" => Some(TOKEN.into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<(FileConfig, ConfigText)> {
    let path = Path::new("fleetscale.toml");
    let text = ConfigText::expand(path, text, &env)?;
    let cfg = toml::from_str::<FileConfig>(&text.expanded).map_err(|e| {
        ConfigError::config(text.located(path, e.span().map_or(0, |s| s.start), e.message()))
    })?;
    Ok((cfg, text))
}

fn build(text: &str) -> Result<NativeTargets> {
    let (cfg, t) = parse(text)?;
    NativeTargets::build(Path::new("fleetscale.toml"), &t, &cfg, &env)
}

fn build_err(text: &str) -> String {
    match build(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = r#"
[engine]
interval = "5s"

[[target]]
name = "web"
backend = { type = "fly", app = "my-app" }
initial_state = "stopped"

[target.policy]
created = "min(running_machines + 1, 10)"
on_error = { mode = "fallback", after_failures = 3, count = 2 }

[target.policy.limits]
created = { min = 1, max = 10 }
scale_in_stabilization = "5m"

[[target.source]]
type = "prometheus"
name = "running_machines"
address = "http://127.0.0.1:9090"
query = "count(fly_instance_up{app='${APP_NAME}'})"
token = "${TOKEN}"
"#;

#[test]
fn parses_a_full_file() {
    let (cfg, _) = parse(GOOD).unwrap();
    assert_eq!(cfg.engine().interval, Duration::from_secs(5));
    assert_eq!(cfg.engine().max_actions_per_tick, 100);
    assert_eq!(cfg.engine().shutdown_grace, Duration::from_secs(3));
    let t = cfg.targets[0].get_ref();
    assert_eq!(t.initial_state, InitialState::Stopped);
    assert_eq!(
        t.policy.limits.as_ref().unwrap().get_ref().created.max,
        Some(10)
    );
    assert_eq!(t.sources.len(), 1);
    let nt = build(GOOD).unwrap();
    assert_eq!(nt.templates.len(), 1);
}

#[test]
fn errors_name_file_line_and_key() {
    let bad = GOOD.replace(
        "initial_state = \"stopped\"",
        "initial_state = \"stopped\"\nbogus = 1",
    );
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.starts_with("fleetscale.toml:9:"), "{e}");
    assert!(e.contains("bogus"), "{e}");

    let bad = GOOD.replace("interval = \"5s\"", "interval = \"5 parsecs\"");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.starts_with("fleetscale.toml:3:"), "{e}");
    assert!(e.contains("interval"), "{e}");

    let bad = GOOD.replace("token = \"${TOKEN}\"", "token = \"${MISSING}\"");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains(":23:") && e.contains("MISSING is not set"),
        "{e}"
    );

    // An expression error points at the expression's own line and column.
    let bad = GOOD.replace(
        "min(running_machines + 1, 10)",
        "min(running_machines + , 10)",
    );
    let e = build_err(&bad);
    assert!(e.starts_with("fleetscale.toml:11:"), "{e}");
    assert!(e.contains("policy.created"), "{e}");
    // An unknown variable names the target and points at the expression.
    let bad = GOOD.replace("min(running_machines + 1, 10)", "queue_depth");
    let e = build_err(&bad);
    assert!(e.contains("queue_depth") && e.contains("\"web\""), "{e}");
    assert!(e.starts_with("fleetscale.toml:11:"), "{e}");
    // The error of a max expression points at created_max, not at the first key.
    let range = GOOD.replace(
        "created = \"min(running_machines + 1, 10)\"",
        "created_min = \"1\"\ncreated_max = \"max(1,\"",
    );
    let e = build_err(&range);
    assert!(e.starts_with("fleetscale.toml:12:"), "{e}");
    assert!(e.contains("policy.created_max"), "{e}");
    // Messages use this file's key names, not fly-autoscaler's.
    let half = GOOD.replace(
        "created = \"min(running_machines + 1, 10)\"",
        "created_min = \"1\"",
    );
    let e = build_err(&half);
    assert!(e.contains("created_min requires created_max"), "{e}");
    assert!(!e.contains("machine-count"), "{e}");
}

#[test]
fn errors_quote_the_file_as_written_never_an_expanded_value() {
    // The secret lands in a value of the wrong type: TOML's message would quote it.
    let bad = GOOD.replace("interval = \"5s\"", "interval = \"${TOKEN}\"");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(!e.contains("s3cret-prom-token"), "{e}");
    assert!(
        e.contains("interval = \"${TOKEN}\""),
        "the line as written: {e}"
    );
    // A syntax error on a line with a substitution.
    let bad = GOOD.replace("token = \"${TOKEN}\"", "token = ${TOKEN}");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(!e.contains("s3cret-prom-token"), "{e}");
    assert!(e.contains("token = ${TOKEN}"), "{e}");
    // A column after a substitution is the column in the file as written.
    let bad = GOOD.replace(
        "token = \"${TOKEN}\"",
        "token = \"${TOKEN}\"\nextra = \"${TOKEN}\" bogus",
    );
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.starts_with("fleetscale.toml:24:"), "{e}");
    assert!(!e.contains("s3cret-prom-token"), "{e}");
}

#[test]
fn comments_are_not_expanded_and_a_byte_order_mark_is_fine() {
    let commented = GOOD.replace(
        "interval = \"5s\"",
        "interval = \"5s\" # was ${UNSET_VARIABLE}\n# ${ALSO_UNSET}",
    );
    let (cfg, text) = parse(&commented).unwrap();
    assert_eq!(cfg.engine().interval, Duration::from_secs(5));
    assert!(text.expanded.contains("${UNSET_VARIABLE}"));
    // `#` inside a string is not a comment.
    let hash = GOOD.replace("http://127.0.0.1:9090", "http://127.0.0.1:9090/#${TOKEN}");
    let (_, text) = parse(&hash).unwrap();
    assert!(
        text.expanded.contains("/#s3cret-prom-token"),
        "{}",
        text.expanded
    );
    let bom = format!("\u{feff}{GOOD}");
    build(&bom).unwrap();
}

#[test]
fn overlapping_targets_are_refused() {
    let target = |name: &str, backend: &str| {
        format!(
            "\n[[target]]\nname = \"{name}\"\nbackend = {{ type = \"fly\", {backend} }}\n[target.policy]\ncreated = \"2\"\n"
        )
    };
    let file = |targets: &[String]| targets.concat();
    // (first target, second target, what the error says); the first error's position is
    // checked too.
    type Target<'a> = (&'a str, &'a str);
    let refused: [(Target, Target, &str); 5] = [
        (
            ("a", "app = \"my-app\""),
            ("b", "app = \"my-app\""),
            "manages the same machines as target \"a\"",
        ),
        // Every process group ("") overlaps any group.
        (
            ("a", "app = \"my-app\", process_group = \"web\""),
            ("b", "app = \"my-app\", process_group = \"\""),
            "every process group",
        ),
        // A wildcard that matches an app named elsewhere, in either order.
        (
            ("a", "app = \"my-app\""),
            ("b", "app = \"my-*\", org = \"o\""),
            "\"my-*\"",
        ),
        (
            ("a", "app = \"my-*\", org = \"o\""),
            ("b", "app = \"my-app\""),
            "same machines",
        ),
        // Two names for the same target.
        (
            ("a", "app = \"one\""),
            ("a", "app = \"two\""),
            "already defined at line 2",
        ),
    ];
    for (i, ((name_a, a), (name_b, b), says)) in refused.into_iter().enumerate() {
        let e = build_err(&file(&[target(name_a, a), target(name_b, b)]));
        assert!(e.contains(says), "{a} / {b}: {e}");
        if i == 0 {
            assert!(
                e.starts_with("fleetscale.toml:8:"),
                "points at the second target: {e}"
            );
        }
    }
    // Different process groups, different apps, different APIs: fine.
    build(&file(&[
        target("a", "app = \"my-app\", process_group = \"web\""),
        target("b", "app = \"my-app\", process_group = \"worker\""),
        target("c", "app = \"other-*\", org = \"o\""),
        target(
            "d",
            "app = \"my-app\", base_url = \"http://127.0.0.1:4280\"",
        ),
    ]))
    .unwrap();
}

#[test]
fn zero_and_absurd_settings_are_refused_with_their_line() {
    for (from, to, key, line) in [
        (
            "interval = \"5s\"",
            "interval = \"0s\"",
            "engine.interval",
            3,
        ),
        (
            "interval = \"5s\"",
            "interval = \"5s\"\ntick_timeout = \"0s\"",
            "engine.tick_timeout",
            4,
        ),
        (
            "interval = \"5s\"",
            "interval = \"5s\"\nmetric_timeout = \"0ms\"",
            "engine.metric_timeout",
            4,
        ),
        (
            "interval = \"5s\"",
            "interval = \"5s\"\nrefresh_interval = \"0s\"",
            "engine.refresh_interval",
            4,
        ),
        (
            "interval = \"5s\"",
            "interval = \"10000h\"",
            "engine.interval",
            3,
        ),
        (
            "interval = \"5s\"",
            "interval = \"5s\"\nshutdown_grace = \"30d\"",
            "engine.shutdown_grace",
            4,
        ),
        (
            "interval = \"5s\"",
            "interval = \"5s\"\nmax_actions_per_tick = 0",
            "engine.max_actions_per_tick",
            4,
        ),
        (
            "interval = \"5s\"",
            "interval = \"5s\"\nmax_actions_per_tick = 1000000",
            "engine.max_actions_per_tick",
            4,
        ),
        (
            "scale_in_stabilization = \"5m\"",
            "scale_in_stabilization = \"99999h\"",
            "limits.scale_in_stabilization",
            16,
        ),
        (
            "scale_in_stabilization = \"5m\"",
            "cooldown_after_scale_up = \"400d\"",
            "limits.cooldown_after_scale_up",
            16,
        ),
    ] {
        let bad = GOOD.replace(from, to);
        let e = build_err(&bad);
        assert!(e.contains(key), "{key}: {e}");
        assert!(
            e.starts_with(&format!("fleetscale.toml:{line}:")),
            "{key}: {e}"
        );
    }
    // A grace of zero is allowed (cancel at once); cooldowns of zero are off.
    build(&GOOD.replace(
        "interval = \"5s\"",
        "interval = \"5s\"\nshutdown_grace = \"0s\"",
    ))
    .unwrap();
}

#[test]
fn inverted_bounds_are_refused() {
    let bad = GOOD.replace(
        "created = { min = 1, max = 10 }",
        "created = { min = 5, max = 2 }",
    );
    let e = build_err(&bad);
    assert!(
        e.contains("created min 5 is greater than created max 2"),
        "{e}"
    );
    assert!(e.starts_with("fleetscale.toml:15:"), "{e}");
    let bad = GOOD.replace(
        "created = \"min(running_machines + 1, 10)\"",
        "started_min = \"4\"\nstarted_max = \"1\"",
    );
    let e = build_err(&bad);
    assert!(
        e.contains("started min 4 is greater than started max 1"),
        "{e}"
    );
}

#[test]
fn a_missing_fly_token_is_refused_at_load() {
    let (cfg, text) = parse(GOOD).unwrap();
    let no_token = |k: &str| (k == "TOKEN").then(|| "x".to_owned());
    let e = NativeTargets::build(Path::new("f.toml"), &text, &cfg, &no_token)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("Fly API token required"), "{e}");
    assert!(e.contains("FLY_API_TOKEN"), "{e}");
    // Blank, or only a scheme: no credentials would be sent.
    for blank in [" ", "FlyV1 ", "Bearer"] {
        let env = |k: &str| Some(if k == "FLY_API_TOKEN" { blank } else { "x" }.to_owned());
        let e = NativeTargets::build(Path::new("f.toml"), &text, &cfg, &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("Fly API token required"), "{blank:?}: {e}");
    }
}

#[test]
fn the_example_file_and_a_weave_section_build() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bin/fleetscale.example.toml"
    ));
    let env = |k: &str| match k {
        "FLY_PROMETHEUS_TOKEN" => Some("FlyV1 fm2_x".to_owned()),
        "FLY_API_TOKEN" => Some(TOKEN.to_owned()),
        _ => None,
    };
    let (cfg, text) = load(path, &env).unwrap();
    assert_eq!(cfg.targets.len(), 2);
    NativeTargets::build(path, &text, &cfg, &env).unwrap();

    let weave = format!(
        "{GOOD}\n[target.weave]\nfixed = [{{ name = \"00:00:00:00:00:01\", address = \"10.0.0.1\", api_url = \"http://10.0.0.1:6784\" }}]\nledger = \"/tmp/l.jsonl\"\n"
    );
    let (cfg, _) = parse(&weave).unwrap();
    let w = cfg.targets[0].get_ref().weave.as_ref().unwrap();
    assert_eq!(w.router_port, 6784);
    assert_eq!(w.fixed.len(), 1);
    assert_eq!(w.min_unreachable, None, "the reclaimer's default applies");
    let (cfg, _) = parse(&format!("{weave}min_unreachable = \"90s\"\n")).unwrap();
    let w = cfg.targets[0].get_ref().weave.as_ref().unwrap();
    assert_eq!(w.min_unreachable, Some(Duration::from_secs(90)));
    let e = build_err(&format!("{weave}min_unreachable = \"9999h\"\n"));
    assert!(e.contains("weave.min_unreachable"), "{e}");
}

#[test]
fn the_ec2_example_and_its_errors() {
    let example = include_str!("../../../examples/ec2-weave-spot.toml");
    let targets = build(example).unwrap();
    assert_eq!(targets.ec2.len(), 1);
    assert!(targets.templates.is_empty());
    let t = &targets.ec2[0];
    let script = t.user_data().expect("the Weave bootstrap as user data");
    assert!(
        script.contains("PEERS=\"10.0.0.1 10.0.0.2 10.0.0.3\""),
        "{script}"
    );
    assert!(
        script.contains("--ipalloc-init=observer --http-addr=0.0.0.0:6784 $PEERS"),
        "{script}"
    );

    // A pool without launch settings: named with its line.
    let e = build_err(
        "[[target]]\nname = \"p\"\nbackend = { type = \"ec2\", pool = \"p\", instance_type = \"t3.small\" }\n[target.policy]\ncreated = \"1\"\n",
    );
    assert!(
        e.contains("fleetscale.toml:") && e.contains("image_id"),
        "{e}"
    );
    // An unknown key of the pool.
    let e = build_err(
        "[[target]]\nbackend = { type = \"ec2\", pool = \"p\", image_id = \"ami-1\", instance_type = \"t3.small\", colour = \"red\" }\n[target.policy]\ncreated = \"1\"\n",
    );
    assert!(e.contains("colour"), "{e}");
    // User data of its own next to [target.weave].
    let with_user_data = example.replace(
        "tags = { team = \"network\" }",
        "tags = { team = \"network\" }, user_data = \"#!/bin/sh\\n\"",
    );
    let e = build_err(&with_user_data);
    assert!(
        e.contains("user_data cannot be set with [target.weave]"),
        "{e}"
    );
    // Two targets on one pool.
    let twice = format!(
        "{example}\n[[target]]\nname = \"again\"\nbackend = {{ type = \"ec2\", pool = \"weave-dynamic\", region = \"eu-west-1\", image_id = \"ami-1\", instance_type = \"t3.small\" }}\n[target.policy]\ncreated = \"1\"\n"
    );
    let e = build_err(&twice);
    assert!(e.contains("same EC2 instances"), "{e}");
}

#[test]
fn the_release_guard_is_on_by_default_and_can_be_turned_off() {
    let path = Path::new("f.toml");
    let env = |k: &str| match k {
        "FLY_API_BASE_URL" => Some("http://127.0.0.1:9".to_owned()),
        "FLY_API_TOKEN" => Some(TOKEN.to_owned()),
        "TOKEN" => Some("t".to_owned()),
        _ => None,
    };
    let (cfg, text) = parse(GOOD).unwrap();
    let BackendConfig::Fly(fly) = &cfg.targets[0].get_ref().backend else {
        panic!("a Fly target")
    };
    assert!(fly.release_guard);
    let built = NativeTargets::build(path, &text, &cfg, &env).unwrap();
    let guard = built.templates[0].apps.release_guard().expect("guard");
    assert_eq!(guard.url().as_str(), "http://127.0.0.1:9/graphql");

    let own = GOOD.replace(
        "app = \"my-app\" }",
        "app = \"my-app\", graphql_base_url = \"http://127.0.0.1:8\" }",
    );
    let (cfg, text) = parse(&own).unwrap();
    let built = NativeTargets::build(path, &text, &cfg, &env).unwrap();
    let guard = built.templates[0].apps.release_guard().expect("guard");
    assert_eq!(guard.url().as_str(), "http://127.0.0.1:8/graphql");

    let off = GOOD.replace(
        "app = \"my-app\" }",
        "app = \"my-app\", release_guard = false }",
    );
    let (cfg, text) = parse(&off).unwrap();
    let BackendConfig::Fly(fly) = &cfg.targets[0].get_ref().backend else {
        panic!("a Fly target")
    };
    assert!(!fly.release_guard);
    let built = NativeTargets::build(path, &text, &cfg, &env).unwrap();
    assert!(built.templates[0].apps.release_guard().is_none());
}

#[test]
fn line_and_column() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é", 1), (1, 1), "inside a character");
}

#[test]
fn offsets_map_back_to_the_file_as_written() {
    let env = |k: &str| (k == "V").then(|| "0123456789".to_owned());
    let t = ConfigText::expand(Path::new("f"), "a = \"${V}\" x", &env).unwrap();
    assert_eq!(t.expanded, "a = \"0123456789\" x");
    assert_eq!(t.raw_offset(3), 3);
    assert_eq!(t.raw_offset(8), 5, "inside the value: the start of ${{V}}");
    assert_eq!(t.raw_offset(17), 11, "after it: shifted back");
}
