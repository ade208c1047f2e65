//! The recursion bounds keep the deepest accepted expressions within a small stack.

use super::*;

/// The deepest accepted expressions of every shape (and much deeper rejected ones) are
/// parsed, checked, evaluated, printed, re-parsed, cloned and dropped on a thread with a
/// 1 MiB stack, half the default. Measured in a debug build: this needs between 384 and
/// 512 KiB (the recursive functions keep small frames; see `Fallible`).
#[test]
fn deepest_expressions_fit_in_a_small_stack() {
    let run = || {
        let d = MAX_DEPTH - 1;
        let inputs = [
            format!(
                "{}1{}",
                "(".repeat(2 * MAX_DEPTH),
                ")".repeat(2 * MAX_DEPTH)
            ),
            format!("{}1", "-".repeat(d)),
            format!("{}1", "!".repeat(d)).replace("!1", "!true"),
            format!("{}1{}", "abs(".repeat(d), ")".repeat(d)),
            format!("{}1", "true ? 1 : ".repeat(d)),
            vec!["2"; MAX_DEPTH / 2].join(" ** "),
            vec!["1"; MAX_DEPTH].join(" + "),
            format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}1", "-".repeat(100_000)),
        ];
        let mut parsed = 0;
        for s in &inputs {
            if let Ok(e) = Expr::parse(s) {
                parsed += 1;
                assert!(e.eval(&Variables::new()).is_ok(), "{}", &s[..20]);
                assert!(e.check_types(&|_| None).is_ok());
                assert!(e.check_variables(&|_| false).is_ok());
                assert!(e.variables().is_empty());
                let c = e.to_canonical_string();
                assert_eq!(Expr::parse(&c).map(|x| x.to_canonical_string()), Ok(c));
                assert_eq!(e.clone(), e);
            }
        }
        parsed
    };
    let parsed = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(run)
        .expect("spawn")
        .join()
        .expect("no panic");
    assert_eq!(parsed, 7);
}
