//! `duct.sources.generator.Function`: a synthetic signal, `f(x)` with `x`
//! advancing by `dx` every tick. Useful to test triggers, routes and
//! outputs without touching the host.
//!
//! As in Duct (Python), a result is an integer when Python would make it
//! an `int`: `x` starts at the integer 0, so with an integer `dx` (`dx: 1`)
//! `x` stays one, and `x * 2` or `abs(-5)` are integer metrics, while
//! `sin(x)`, `x / 2` and anything of the default `dx: 0.1` are floats (see
//! [`MathExpr::integral`]).

use duct_core::expr::MathExpr;
use duct_core::{Metric, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// An expression in `x` (Duct's functions and constants).
    function: String,
    /// How far `x` moves each tick.
    dx: Step,
}

/// `dx` as written: an integer keeps `x` an integer, as in Python.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Int(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Step, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Step;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Step, E> {
                Ok(Step::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Step, E> {
                i64::try_from(v)
                    .map(Step::Int)
                    .map_err(|_| E::custom("an integer step that large is out of range"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Step, E> {
                Ok(Step::Float(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Step {
    fn value(self) -> f64 {
        match self {
            Step::Int(v) => v as f64,
            Step::Float(v) => v,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            function: MathExpr::DEFAULT_SOURCE.into(),
            dx: Step::Float(0.1),
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.generator.Function",
        "Produces f(x) with x advancing by dx each tick (sin, cos, tan, their inverse and hyperbolic forms, log(n[, base]), abs, e, pi; extras: sqrt, exp, floor, ceil, min, max, pow, atan2, degrees, radians)",
        &["(service): f(x)"],
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, duct_core::config::Diagnostic> {
    let opts: Options = args.options()?;
    let function = MathExpr::parse(&opts.function).map_err(|e| {
        let shifted = args.block.node.get("function").map(|n| {
            let quoted = matches!(
                n.value,
                duct_core::config::Value::Scalar(_, duct_core::config::Style::Quoted)
            );
            n.mark.shifted(e.offset + usize::from(quoted))
        });
        duct_core::config::Diagnostic::error(
            shifted,
            format!(
                "{}.function: bad expression `{}`: {}",
                args.block.context, opts.function, e.message
            ),
        )
    })?;
    if !opts.dx.value().is_finite() {
        return Err(args.invalid("dx", "must be a finite number"));
    }
    let integral = function.integral(matches!(opts.dx, Step::Int(_)));
    Ok(Box::new(Function {
        function,
        dx: opts.dx.value(),
        x: 0.0,
        integral,
    }))
}

pub struct Function {
    function: MathExpr,
    dx: f64,
    /// Advanced before each evaluation, as Duct did (the first tick is f(dx)).
    x: f64,
    /// Whether Python would give an `int`: the metric is then an integer.
    integral: bool,
}

/// The most an `f64` holds every integer up to, exactly.
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

impl Function {
    fn metric(&self, v: f64) -> Metric {
        if self.integral && v.fract() == 0.0 && v.abs() <= EXACT_INTEGERS {
            Metric::Int(v as i64)
        } else {
            Metric::Float(v)
        }
    }
}

impl Source for Function {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        self.x += self.dx;
        let result = self
            .function
            .eval(self.x)
            .map(|v| vec![ctx.create_event("ok", "Sine wave", self.metric(v))])
            .map_err(|e| format!("{} at x = {}: {e}", self.function.source(), self.x).into());
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;
    use duct_core::Metric;

    #[tokio::test]
    async fn steps_x_and_evaluates() {
        let (ctx, _) = context("wave");
        let mut f = Function {
            function: MathExpr::parse("x * 2").unwrap(),
            dx: 0.5,
            x: 0.0,
            integral: false,
        };
        let first = f.get(&ctx).await.unwrap();
        let second = f.get(&ctx).await.unwrap();
        assert_eq!(first[0].metric, Some(Metric::Float(1.0)));
        assert_eq!(second[0].metric, Some(Metric::Float(2.0)));
        assert_eq!(first[0].service, "wave");
        assert_eq!(first[0].state.as_deref(), Some("ok"));
        assert_eq!(first[0].description, "Sine wave");
    }

    #[tokio::test]
    async fn evaluation_errors_fail_the_tick() {
        let (ctx, _) = context("wave");
        let mut f = Function {
            function: MathExpr::parse("1 / (x - 1)").unwrap(),
            dx: 1.0,
            x: 0.0,
            integral: false,
        };
        let err = f.get(&ctx).await.unwrap_err();
        assert!(err.to_string().contains("x = 1"), "{err}");
        assert!(f.get(&ctx).await.is_ok(), "the source goes on after a bad point");
    }
}
