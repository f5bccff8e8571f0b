//! `duct.sources.generator.Function`: a synthetic signal, `f(x)` with `x`
//! advancing by `dx` every tick. Useful to test triggers, routes and
//! outputs without touching the host.

use duct_core::expr::MathExpr;
use duct_core::{Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// An expression in `x` (Duct's functions and constants).
    function: String,
    /// How far `x` moves each tick.
    dx: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            function: MathExpr::DEFAULT_SOURCE.into(),
            dx: 0.1,
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
    if !opts.dx.is_finite() {
        return Err(args.invalid("dx", "must be a finite number"));
    }
    Ok(Box::new(Function {
        function,
        dx: opts.dx,
        x: 0.0,
    }))
}

pub struct Function {
    function: MathExpr,
    dx: f64,
    /// Advanced before each evaluation, as Duct did (the first tick is f(dx)).
    x: f64,
}

impl Source for Function {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        self.x += self.dx;
        let result = self
            .function
            .eval(self.x)
            .map(|v| vec![ctx.create_event("ok", "Sine wave", v)])
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
        };
        let err = f.get(&ctx).await.unwrap_err();
        assert!(err.to_string().contains("x = 1"), "{err}");
        assert!(f.get(&ctx).await.is_ok(), "the source goes on after a bad point");
    }
}
