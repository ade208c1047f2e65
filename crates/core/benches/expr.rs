//! Expression language micro-benchmarks: parsing (with the load-time checks) and evaluation of
//! the blueprint expression and of a deliberately complex one.
//!
//! Run: `cargo bench -p fleetscale-core --bench expr -- --sample-size 20 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use fleetscale_core::expr::{Expr, Variables};

#[path = "../../shared/criterion_config.rs"]
mod criterion_config;

/// fly-autoscaler's blueprint (`blueprints/autoscale-machines`).
const BLUEPRINT: &str = "min(running_machines + 1, 10)";
/// fly-autoscaler's documented example.
const DOC_EXAMPLE: &str = "min(50, qdepth / 2)";
/// Every operator class at once: ternary, logic, chained comparison, string equality, nested
/// calls, arithmetic of every precedence level.
const COMPLEX: &str = "app_name == 'my-app' && 10 < queue_depth <= 10_000 || not (cpu > 0.9) \
    ? min(max(ceil(queue_depth / 20), started_machines + 2, 1), 50) \
    : max(round(cpu * created_machines / 0.7), 1) + abs(floor(-latency_p99 / 250)) % 3 + 2 ** 3 - int('4')";

fn vars() -> Variables {
    let mut v = Variables::new();
    v.set_number("running_machines", 4.0);
    v.set_number("qdepth", 37.0);
    v.set_number("queue_depth", 1234.0);
    v.set_number("cpu", 0.42);
    v.set_number("latency_p99", 730.0);
    v.set_number("created_machines", 8.0);
    v.set_number("started_machines", 6.0);
    v.set_number("stopped_machines", 2.0);
    v.set_number("suspended_machines", 0.0);
    v.set_str("app_name", "my-app");
    v
}

fn bench(c: &mut Criterion) {
    let vars = vars();
    let cases = [
        ("blueprint", BLUEPRINT),
        ("doc_example", DOC_EXAMPLE),
        ("complex", COMPLEX),
    ];
    let mut parse = c.benchmark_group("expr_parse");
    for (name, src) in cases {
        // Fail loudly (not silently bench an error path) if an expression stops parsing.
        Expr::parse(src).expect("benchmark expression parses");
        parse.bench_with_input(BenchmarkId::from_parameter(name), src, |b, src| {
            b.iter(|| Expr::parse(black_box(src)))
        });
    }
    parse.finish();

    let mut eval = c.benchmark_group("expr_eval_count");
    for (name, src) in cases {
        let e = Expr::parse(src).expect("benchmark expression parses");
        e.eval_count(&vars).expect("benchmark expression evaluates");
        eval.bench_with_input(BenchmarkId::from_parameter(name), &e, |b, e| {
            b.iter(|| e.eval_count(black_box(&vars)))
        });
    }
    eval.finish();
}

fn main() {
    criterion_config::run(bench);
}
