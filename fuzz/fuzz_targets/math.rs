//! The Function source's `function:` expression: parsed, then evaluated
//! at a few points (zero, ordinary, extreme, NaN). An evaluation is a
//! finite number or an error, never infinity (an output cannot carry it).
#![no_main]

use duct_core::expr::MathExpr;
use libfuzzer_sys::fuzz_target;

const POINTS: [f64; 6] = [0.0, 1.0, -2.5, 1e300, -1e-300, f64::NAN];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match MathExpr::parse(text) {
        Ok(expr) => {
            for x in POINTS {
                if let Ok(y) = expr.eval(x) {
                    assert!(y.is_finite(), "{text:?} at {x} is {y}");
                }
            }
            expr.integral(true);
        }
        Err(e) => assert!(e.offset <= text.len(), "error at {} in {} bytes", e.offset, text.len()),
    }
});
