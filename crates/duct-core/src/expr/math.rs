//! The Function source's `function:` expression in `x`.
//!
//! Duct's `duct.sources.generator.Function` `eval`ed the configured text
//! (default `sin(x)`) with `x` and Python's `math` functions in scope.
//! [`MathExpr`] parses the same text once and evaluates it per tick: the
//! shared arithmetic (`+ - * / // % **`, unary `+ -`, parentheses) over
//! numbers, `x`, the constants `e` and `pi`, and calls of
//!
//! * Duct's functions: `sin sinh cos cosh tan tanh asin acos atan asinh
//!   acosh atanh abs`, and `log(n)` (natural) or `log(n, base)`;
//! * ductd extras, harmless and often wanted: `sqrt exp floor ceil degrees
//!   radians`, `pow(a, b)`, `atan2(y, x)`, and `min`/`max` of two or more
//!   arguments.
//!
//! Where Python raises (division by zero, a math domain error such as
//! `log(0)`, overflow such as `exp(1000)`), evaluation returns an
//! [`EvalError`] naming the problem, never NaN or infinity.

use std::f64::consts::{E, PI};

use super::arith::{BinOp, Env, Grammar, Node, Parser};
use super::lex::{self, Tok, Token};
use super::{suggest, EvalError, ExprError};

/// A parsed Function-source expression, such as `sin(x)` or `log(x, 2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MathExpr {
    /// The expression as configured, for messages and [`MathExpr::source`].
    source: String,
    root: Node<Call>,
}

/// A function call: what this dialect adds to the arithmetic tree.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    func: Func,
    /// As many as `func.arity()` allows; checked when parsed.
    args: Vec<Node<Call>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Sin,
    Sinh,
    Cos,
    Cosh,
    Tan,
    Tanh,
    Asin,
    Acos,
    Atan,
    Asinh,
    Acosh,
    Atanh,
    Log,
    Abs,
    Sqrt,
    Exp,
    Floor,
    Ceil,
    Min,
    Max,
    Pow,
    Atan2,
    Degrees,
    Radians,
}

/// Every function by name. Order matters only for suggestions, where ties
/// go to the earlier entry (`sine` suggests `sin`, not `sinh`).
const FUNCTIONS: [(&str, Func); 24] = [
    ("sin", Func::Sin),
    ("cos", Func::Cos),
    ("tan", Func::Tan),
    ("log", Func::Log),
    ("abs", Func::Abs),
    ("sqrt", Func::Sqrt),
    ("exp", Func::Exp),
    ("sinh", Func::Sinh),
    ("cosh", Func::Cosh),
    ("tanh", Func::Tanh),
    ("asin", Func::Asin),
    ("acos", Func::Acos),
    ("atan", Func::Atan),
    ("asinh", Func::Asinh),
    ("acosh", Func::Acosh),
    ("atanh", Func::Atanh),
    ("floor", Func::Floor),
    ("ceil", Func::Ceil),
    ("min", Func::Min),
    ("max", Func::Max),
    ("pow", Func::Pow),
    ("atan2", Func::Atan2),
    ("degrees", Func::Degrees),
    ("radians", Func::Radians),
];

/// The names that are values rather than functions.
const VALUES: [&str; 3] = ["x", "e", "pi"];

impl MathExpr {
    /// Duct's default `function:`.
    pub const DEFAULT_SOURCE: &'static str = "sin(x)";

    /// Parses a Function-source expression such as "sin(x) * 10".
    pub fn parse(src: &str) -> Result<MathExpr, ExprError> {
        let tokens = lex::tokenize(src)?;
        if tokens.is_empty() {
            return Err(ExprError::at(
                0,
                "empty expression: expected a function of `x` such as `sin(x)`",
            ));
        }
        let mut parser = Parser::new(tokens, src.len());
        let root = MathGrammar.expr(&mut parser)?;
        parser.finish()?;
        Ok(MathExpr {
            source: src.to_owned(),
            root,
        })
    }

    /// The expression's value at `x`, or why Python would have raised.
    pub fn eval(&self, x: f64) -> Result<f64, EvalError> {
        let value = self.root.eval(&MathEnv { x })?;
        // Only a non-finite literal (`1e999`) or `x` gets here unchecked.
        if !value.is_finite() {
            return Err(EvalError(format!("result is not a finite number: {value:?}")));
        }
        Ok(value)
    }

    /// Whether the value is an integer in Python's eyes (an `int`, as Duct
    /// would report it) when `x` is one: `abs(-5)`, `x * 2`, `x // 3` are;
    /// `x / 2`, `sin(x)`, `1.0` are not. `floor` and `ceil` give ints, as
    /// Python 3's `math` does; `min` and `max` when all their arguments
    /// are; `pow` as `**`. A negative integer power (`2 ** -1`, a float in
    /// Python) is told by its value, which is then not whole.
    pub fn integral(&self, x_integral: bool) -> bool {
        fn call(c: &Call, x: bool) -> bool {
            let all = || c.args.iter().all(|a| a.integral(x, &|c| call(c, x)));
            match c.func {
                Func::Floor | Func::Ceil => true,
                Func::Abs | Func::Min | Func::Max | Func::Pow => all(),
                _ => false,
            }
        }
        self.root.integral(x_integral, &|c| call(c, x_integral))
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

struct MathGrammar;

impl MathGrammar {
    /// `name '(' (arith (',' arith)* ','?)? ')'`, the name being `name` and
    /// the `(` the next token.
    fn call<'a>(&self, p: &mut Parser<'a>, name: Token<'a>) -> Result<Node<Call>, ExprError> {
        let func = match Func::named(name.text) {
            Some(func) => func,
            None if VALUES.contains(&name.text) => {
                return Err(ExprError::at(name.offset, format!("`{}` is not a function", name.text)))
            }
            None => {
                let mut message = format!("unknown function `{}`", name.text);
                if let Some(known) = suggest(name.text, FUNCTIONS.map(|(n, _)| n)) {
                    message.push_str(&format!("; did you mean `{known}`?"));
                }
                return Err(ExprError::at(name.offset, message));
            }
        };
        let open = p.bump();
        let args = p.nested(open.offset, |p| {
            let mut args = Vec::new();
            if p.eat(Tok::RParen) {
                return Ok(args);
            }
            loop {
                args.push(p.arith(self)?);
                if !p.eat(Tok::Comma) {
                    p.close_paren(open)?;
                    return Ok(args);
                }
                // Python allows a trailing comma: `min(1, 2,)`.
                if p.eat(Tok::RParen) {
                    return Ok(args);
                }
            }
        })?;
        func.check_arity(args.len())
            .map_err(|message| ExprError::at(name.offset, message))?;
        Ok(Node::Ext(Box::new(Call { func, args })))
    }
}

impl Grammar for MathGrammar {
    type Ext = Call;
    const OPERAND: &'static str = "a number, `x`, `e`, `pi` or a function call";

    fn expr(&self, p: &mut Parser<'_>) -> Result<Node<Call>, ExprError> {
        p.arith(self)
    }

    fn name<'a>(&self, p: &mut Parser<'a>, name: Token<'a>) -> Result<Node<Call>, ExprError> {
        p.bump();
        if p.peek().kind == Tok::LParen {
            return self.call(p, name);
        }
        let message = match name.text {
            "x" => return Ok(Node::Var),
            "e" => return Ok(Node::Num(E)),
            "pi" => return Ok(Node::Num(PI)),
            func if Func::named(func).is_some() => {
                format!("`{func}` is a function: call it, as in `{func}(x)`")
            }
            unknown => match suggest(unknown, VALUES) {
                Some(known) => format!("unknown name `{unknown}`; did you mean `{known}`?"),
                None => {
                    format!("unknown name `{unknown}`: the names are `x`, `e`, `pi` and functions")
                }
            },
        };
        Err(ExprError::at(name.offset, message))
    }
}

struct MathEnv {
    x: f64,
}

impl Env<Call> for MathEnv {
    fn var(&self) -> Result<f64, EvalError> {
        Ok(self.x)
    }

    fn ext(&self, call: &Call) -> Result<f64, EvalError> {
        let args = call
            .args
            .iter()
            .map(|arg| arg.eval(self))
            .collect::<Result<Vec<f64>, EvalError>>()?;
        call.func.apply(&args)
    }
}

impl Func {
    fn named(name: &str) -> Option<Func> {
        FUNCTIONS.iter().find(|(n, _)| *n == name).map(|&(_, func)| func)
    }

    fn name(self) -> &'static str {
        FUNCTIONS.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }

    /// Fewest and most arguments (`None`: no limit).
    fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::Log => (1, Some(2)),
            Func::Pow | Func::Atan2 => (2, Some(2)),
            Func::Min | Func::Max => (2, None),
            _ => (1, Some(1)),
        }
    }

    fn check_arity(self, given: usize) -> Result<(), String> {
        let (min, max) = self.arity();
        if given >= min && max.is_none_or(|max| given <= max) {
            return Ok(());
        }
        let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
        let takes = match max {
            Some(max) if max == min => format!("{min} {}", plural(min)),
            Some(max) => format!("{min} or {max} arguments"),
            None => format!("at least {min} arguments"),
        };
        Err(format!("`{}` takes {takes}, got {given}", self.name()))
    }

    /// The function at `args`, with Python's errors where `math` raises.
    fn apply(self, args: &[f64]) -> Result<f64, EvalError> {
        let call = || {
            let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
            format!("{}({})", self.name(), args.join(", "))
        };
        let domain = || Err(EvalError(format!("math domain error: {}", call())));
        let value = match (self, args) {
            (Func::Sin, &[a]) => a.sin(),
            (Func::Sinh, &[a]) => a.sinh(),
            (Func::Cos, &[a]) => a.cos(),
            (Func::Cosh, &[a]) => a.cosh(),
            (Func::Tan, &[a]) => a.tan(),
            (Func::Tanh, &[a]) => a.tanh(),
            (Func::Asin, &[a]) => a.asin(),
            (Func::Acos, &[a]) => a.acos(),
            (Func::Atan, &[a]) => a.atan(),
            (Func::Asinh, &[a]) => a.asinh(),
            (Func::Acosh, &[a]) => a.acosh(),
            // Rust gives ±inf at ±1 where Python raises a domain error.
            (Func::Atanh, &[a]) if a.abs() >= 1.0 => return domain(),
            (Func::Atanh, &[a]) => a.atanh(),
            // Rust gives -inf at 0 where Python raises a domain error.
            (Func::Log, &[a, ..]) if a <= 0.0 => return domain(),
            (Func::Log, &[a]) => a.ln(),
            (Func::Log, &[_, base]) if base <= 0.0 => return domain(),
            // Python computes log(a) / log(base) and so divides by zero.
            (Func::Log, &[_, 1.0]) => return Err(EvalError(format!("division by zero: {}", call()))),
            (Func::Log, &[a, base]) => a.ln() / base.ln(),
            (Func::Abs, &[a]) => a.abs(),
            (Func::Sqrt, &[a]) => a.sqrt(),
            (Func::Exp, &[a]) => a.exp(),
            (Func::Floor, &[a]) => a.floor(),
            (Func::Ceil, &[a]) => a.ceil(),
            // Python's min/max keep the first of equals and compare with
            // `<`/`>`, which decides how a NaN argument falls out.
            (Func::Min, [first, rest @ ..]) => rest.iter().fold(*first, |min, &v| if v < min { v } else { min }),
            (Func::Max, [first, rest @ ..]) => rest.iter().fold(*first, |max, &v| if v > max { v } else { max }),
            (Func::Pow, &[a, b]) => return BinOp::Pow.apply(a, b),
            (Func::Atan2, &[y, x]) => y.atan2(x),
            (Func::Degrees, &[a]) => a.to_degrees(),
            (Func::Radians, &[a]) => a.to_radians(),
            // Parsing checked the arity, so this is only reachable if the
            // table above and `arity` disagree; fail rather than panic.
            _ => {
                return Err(EvalError(format!(
                    "`{}` cannot take {} arguments",
                    self.name(),
                    args.len()
                )))
            }
        };
        if value.is_nan() && !args.iter().any(|a| a.is_nan()) {
            return domain();
        }
        if value.is_infinite() && args.iter().all(|a| a.is_finite()) {
            return Err(EvalError(format!("overflow (result too large): {}", call())));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_int_results_are_told_from_floats() {
        let integral = |src: &str, x: bool| MathExpr::parse(src).unwrap().integral(x);
        for src in [
            "abs(-5)",
            "5",
            "0x1F",
            "1_000",
            "-x",
            "x * 2 + 1",
            "x // 3",
            "x % 7",
            "x ** 2",
            "floor(x / 2)",
            "ceil(0.5)",
            "max(x, 3)",
            "pow(2, 3)",
        ] {
            assert!(integral(src, true), "{src}");
        }
        for src in [
            "1.0",
            "1e3",
            "x / 2",
            "sin(x)",
            "abs(-5.0)",
            "max(x, 3.0)",
            "pi",
            "e * 2",
            "sqrt(4)",
            "log(8, 2)",
        ] {
            assert!(!integral(src, true), "{src}");
        }
        assert!(!integral("x * 2", false), "a float x gives floats");
        assert!(integral("abs(-5)", false), "whatever x is");
    }

    fn expr(src: &str) -> MathExpr {
        MathExpr::parse(src).unwrap_or_else(|e| panic!("{src:?} should parse: {e}"))
    }

    fn at(src: &str, x: f64) -> f64 {
        expr(src).eval(x).unwrap_or_else(|e| panic!("{src:?} at {x}: {e}"))
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= 1e-12 * expected.abs().max(1.0)
    }

    fn assert_close(src: &str, x: f64, expected: f64) {
        let actual = at(src, x);
        assert!(
            close(actual, expected),
            "{src:?} at {x}: got {actual}, expected {expected}"
        );
    }

    fn eval_error(src: &str, x: f64) -> String {
        match expr(src).eval(x) {
            Ok(v) => panic!("{src:?} at {x} should fail, got {v}"),
            Err(EvalError(message)) => message,
        }
    }

    fn error(src: &str) -> ExprError {
        match MathExpr::parse(src) {
            Ok(e) => panic!("{src:?} should not parse, got {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn duct_default_is_sine() {
        let sine = expr(MathExpr::DEFAULT_SOURCE);
        assert_eq!(sine.source(), "sin(x)");
        assert_eq!(sine.eval(0.0), Ok(0.0));
        assert_eq!(sine.eval(0.1), Ok(0.09983341664682815));
        assert_eq!(sine.eval(PI / 2.0), Ok(1.0));
        assert_eq!(sine.eval(-PI / 2.0), Ok(-1.0));
        assert_eq!(sine.eval(1.0), Ok(0.8414709848078965));
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(at("1 + 2 * 3", 0.0), 7.0);
        assert_eq!(at("(1 + 2) * 3", 0.0), 9.0);
        assert_eq!(at("10 - 4 - 3", 0.0), 3.0);
        assert_eq!(at("2 * x + 1", 5.0), 11.0);
        assert_eq!(at("x / 4", 2.0), 0.5);
        assert_eq!(at("-2**2", 0.0), -4.0);
        assert_eq!(at("(-2)**2", 0.0), 4.0);
        assert_eq!(at("2**3**2", 0.0), 512.0);
        assert_eq!(at("2**-1", 0.0), 0.5);
        assert_eq!(at("-x**2", 3.0), -9.0);
        assert_eq!(at("- -x", 3.0), 3.0);
        assert_eq!(at("+x", 3.0), 3.0);
        assert_eq!(at("-7 % 3", 0.0), 2.0);
        assert_eq!(at("7 % -3", 0.0), -2.0);
        assert_eq!(at("x % 3", -7.0), 2.0);
        assert_eq!(at("7 // 2", 0.0), 3.0);
        assert_eq!(at("-7 // 2", 0.0), -4.0);
        assert_eq!(at("7.5 // 2", 0.0), 3.0);
        assert_eq!(at("1 // 0.1", 0.0), 9.0);
        assert_eq!(at("2 * 3 % 4", 0.0), 2.0);
        assert_eq!(at("2 + 3 % 4", 0.0), 5.0);
        assert_eq!(at("1_000 + .5 + 5. + 1e1", 0.0), 1015.5);
        assert_eq!(at("x", 42.0), 42.0);
    }

    #[test]
    fn duct_functions() {
        assert_close("cos(x)", 0.0, 1.0);
        assert_close("tan(x)", PI / 4.0, 1.0);
        assert_close("sinh(x)", 1.0, 1.1752011936438014);
        assert_close("cosh(x)", 1.0, 1.5430806348152437);
        assert_close("tanh(x)", 1.0, 0.7615941559557649);
        assert_close("asin(x)", 1.0, PI / 2.0);
        assert_close("acos(x)", -1.0, PI);
        assert_close("atan(x)", 1.0, PI / 4.0);
        assert_close("asinh(x)", 1.0, 0.881373587019543);
        assert_close("acosh(x)", 2.0, 1.3169578969248166);
        assert_close("atanh(x)", 0.5, 0.5493061443340549);
        assert_close("abs(x)", -3.5, 3.5);
        assert_close("e", 0.0, std::f64::consts::E);
        assert_close("pi", 0.0, PI);
    }

    #[test]
    fn log_natural_and_with_base() {
        assert_eq!(at("log(e)", 0.0), 1.0);
        assert_eq!(at("log(1)", 0.0), 0.0);
        assert_eq!(at("log(x, 2)", 8.0), 3.0);
        assert_close("log(x, 10)", 1000.0, 3.0);
        assert_close("log(100, x)", 10.0, 2.0);
        assert_close("log(x, 0.5)", 4.0, -2.0);
    }

    #[test]
    fn ductd_extras() {
        assert_eq!(at("sqrt(x)", 16.0), 4.0);
        assert_eq!(at("exp(0)", 0.0), 1.0);
        assert_close("exp(x)", 1.0, std::f64::consts::E);
        assert_eq!(at("floor(x)", -2.5), -3.0);
        assert_eq!(at("ceil(x)", -2.5), -2.0);
        assert_eq!(at("min(3, x, 2)", 1.0), 1.0);
        assert_eq!(at("min(3, x, 2)", 5.0), 2.0);
        assert_eq!(at("max(3, x, 2)", 1.0), 3.0);
        assert_eq!(at("max(x, 2,)", 9.0), 9.0);
        assert_eq!(at("pow(2, x)", 10.0), 1024.0);
        assert_close("atan2(1, x)", -1.0, 3.0 * PI / 4.0);
        assert_close("degrees(pi)", 0.0, 180.0);
        assert_close("radians(180)", 0.0, PI);
    }

    #[test]
    fn nested_calls_and_composition() {
        assert_close("sin(x) ** 2 + cos(x) ** 2", 0.7, 1.0);
        assert_close("10 * sin(x / 2) + 50", PI, 60.0);
        assert_close("abs(sin(x)) * max(1, log(x, 2))", 4.0, 2.0 * 4f64.sin().abs());
        assert_eq!(at("sin (x)", 0.0), 0.0);
    }

    #[test]
    fn division_by_zero_is_an_error() {
        assert_eq!(eval_error("1/0", 0.0), "division by zero: 1.0 / 0.0");
        assert_eq!(eval_error("1/x", 0.0), "division by zero: 1.0 / 0.0");
        assert_eq!(eval_error("x % 0", 5.0), "division by zero: 5.0 % 0.0");
        assert_eq!(eval_error("x // 0", 5.0), "division by zero: 5.0 // 0.0");
        assert_eq!(
            eval_error("0 ** -1", 0.0),
            "division by zero (zero to a negative power): 0.0 ** -1.0"
        );
        assert_eq!(eval_error("log(8, 1)", 0.0), "division by zero: log(8.0, 1.0)");
        // Fine at other x.
        assert_eq!(at("1/x", 4.0), 0.25);
    }

    #[test]
    fn math_domain_errors() {
        for (src, x, message) in [
            ("log(0)", 0.0, "math domain error: log(0.0)"),
            ("log(-1)", 0.0, "math domain error: log(-1.0)"),
            ("log(x, 2)", -8.0, "math domain error: log(-8.0, 2.0)"),
            ("log(8, 0)", 0.0, "math domain error: log(8.0, 0.0)"),
            ("log(8, -2)", 0.0, "math domain error: log(8.0, -2.0)"),
            ("sqrt(-1)", 0.0, "math domain error: sqrt(-1.0)"),
            ("asin(2)", 0.0, "math domain error: asin(2.0)"),
            ("acos(x)", -1.5, "math domain error: acos(-1.5)"),
            ("acosh(0.5)", 0.0, "math domain error: acosh(0.5)"),
            ("atanh(1)", 0.0, "math domain error: atanh(1.0)"),
            ("atanh(-1)", 0.0, "math domain error: atanh(-1.0)"),
            ("atanh(x)", 3.0, "math domain error: atanh(3.0)"),
            (
                "(-8) ** (1/3)",
                0.0,
                "math domain error (negative number to a fractional power): \
                 -8.0 ** 0.3333333333333333",
            ),
            (
                "pow(x, 0.5)",
                -4.0,
                "math domain error (negative number to a fractional power): -4.0 ** 0.5",
            ),
        ] {
            assert_eq!(eval_error(src, x), message, "{src:?} at {x}");
        }
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(eval_error("exp(1000)", 0.0), "overflow (result too large): exp(1000.0)");
        assert_eq!(
            eval_error("10.0**400", 0.0),
            "overflow (result too large): 10.0 ** 400.0"
        );
        assert_eq!(
            eval_error("cosh(x)", 1000.0),
            "overflow (result too large): cosh(1000.0)"
        );
        assert_eq!(
            eval_error("x * 1e308", 10.0),
            "overflow (result too large): 10.0 * 1e308"
        );
        assert_eq!(eval_error("1e999", 0.0), "result is not a finite number: inf");
        assert_eq!(eval_error("x", f64::NAN), "result is not a finite number: NaN");
    }

    #[test]
    fn errors_propagate_out_of_calls() {
        assert_eq!(eval_error("sin(1 / x) + 1", 0.0), "division by zero: 1.0 / 0.0");
    }

    #[test]
    fn parse_errors_point_at_the_problem() {
        for (src, offset, message) in [
            ("sin()", 0, "`sin` takes 1 argument, got 0"),
            ("sin(x, 1)", 0, "`sin` takes 1 argument, got 2"),
            ("2 * log(1, 2, 3)", 4, "`log` takes 1 or 2 arguments, got 3"),
            ("log()", 0, "`log` takes 1 or 2 arguments, got 0"),
            ("pow(2)", 0, "`pow` takes 2 arguments, got 1"),
            ("min(x)", 0, "`min` takes at least 2 arguments, got 1"),
            ("max()", 0, "`max` takes at least 2 arguments, got 0"),
            ("foo(x)", 0, "unknown function `foo`"),
            ("sine(x)", 0, "unknown function `sine`; did you mean `sin`?"),
            ("1 + sqr(x)", 4, "unknown function `sqr`; did you mean `sqrt`?"),
            ("atna(x)", 0, "unknown function `atna`; did you mean `atan`?"),
            ("Sin(x)", 0, "unknown function `Sin`; did you mean `sin`?"),
            ("y", 0, "unknown name `y`; did you mean `x`?"),
            ("2 * pii", 4, "unknown name `pii`; did you mean `pi`?"),
            (
                "service",
                0,
                "unknown name `service`: the names are `x`, `e`, `pi` and functions",
            ),
            ("sin + 1", 0, "`sin` is a function: call it, as in `sin(x)`"),
            ("x(2)", 0, "`x` is not a function"),
            ("", 0, "empty expression: expected a function of `x` such as `sin(x)`"),
            ("sin(x", 5, "missing `)` to close the `(` at column 4"),
            ("sin(x y)", 6, "expected `)` to close the `(` at column 4, found `y`"),
            ("sin(x))", 6, "unmatched `)`"),
            (
                "sin(,)",
                4,
                "expected a number, `x`, `e`, `pi` or a function call after `(`, found `,`",
            ),
            (
                "min(1,,2)",
                6,
                "expected a number, `x`, `e`, `pi` or a function call after `,`, found `,`",
            ),
            ("min(1, 2", 8, "missing `)` to close the `(` at column 4"),
            (
                "min(1,",
                6,
                "expected a number, `x`, `e`, `pi` or a function call after `,`",
            ),
            (
                "x +",
                3,
                "expected a number, `x`, `e`, `pi` or a function call after `+`",
            ),
            (
                "* 2",
                0,
                "expected a number, `x`, `e`, `pi` or a function call, found `*`",
            ),
            ("x > 1", 2, "unexpected `>` after `x`"),
            ("x 2", 2, "unexpected `2` after `x`"),
            ("x^2", 1, "`^` is not supported; for a power, write `**`"),
            ("math.sin(x)", 4, "unexpected `.`: attribute access is not supported"),
            ("sin(x)[0]", 6, "unexpected character `[`"),
        ] {
            assert_eq!(error(src), ExprError::at(offset, message), "parsing {src:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}x{}", "sin(".repeat(100), ")".repeat(100));
        assert!(error(&deep).message.starts_with("expression nested too deeply"));
        let fine = format!("{}x{}", "sin(".repeat(20), ")".repeat(20));
        assert!(at(&fine, 0.5) > 0.0);
    }
}
