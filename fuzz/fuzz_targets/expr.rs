//! The expression parser and evaluator: never panics; what parses prints canonically and
//! parses back to an expression that evaluates to the same value (or the same kind of error).
#![no_main]

use fleetscale_core::expr::{Expr, Variables};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = Expr::parse(src) else {
        return;
    };
    let mut vars = Variables::new();
    for name in e.variables() {
        vars.set_number(name, 3.5);
    }
    let a = e.eval(&vars);
    let _ = e.eval_count(&vars);
    let canonical = e.to_canonical_string();
    let again = Expr::parse(&canonical).expect("canonical form parses");
    let b = again.eval(&vars);
    // Same value, or the same kind of error (columns differ in the canonical text).
    let a = a.map_err(|e| e.kind);
    let b = b.map_err(|e| e.kind);
    assert_eq!(
        format!("{a:?}"),
        format!("{b:?}"),
        "{src:?} -> {canonical:?}"
    );
});
