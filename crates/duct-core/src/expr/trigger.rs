//! Duct's `warning:`/`critical:` trigger expressions.
//!
//! A source's `critical: {"cpu": "> 0.9"}` held a fragment Duct completed
//! to the Python expression `service > 0.9` and `eval`ed with `service`
//! bound to the event's metric. [`Trigger`] parses the same fragment once,
//! as that Python expression, and evaluates it per event.
//!
//! The grammar is the shared arithmetic (numbers, `service`, `+ - * / // %
//! **`, parentheses) plus `True`, `False`, `None`, Python's chained
//! comparisons `< <= > >= == !=` and `not`/`and`/`or` (looser than
//! comparisons, `not` tightest of the three). Values are Python's: numbers,
//! booleans as 1 and 0, and `None` for an event without a metric;
//! `and`/`or` yield one of their operands as in Python, and the top-level
//! value triggers when it is truthy (non-zero, not `None`), so `"+ 1"`
//! triggers on any metric but -1.
//!
//! Where Python would raise, nothing triggers: a comparison whose operands
//! cannot be evaluated (an ordering against `None`, a division by zero,
//! overflow) is false, and so is a whole expression that fails outside any
//! comparison (`service + 1` with no metric). Note the consequence: with no
//! metric, `service < 5` is false, so `"> 0 or not service < 5"` is true.

use super::arith::{Env, Grammar, Node, Parser};
use super::lex::{self, Op, Tok, Token};
use super::{suggest, EvalError, ExprError};

/// A parsed trigger, such as `> 0.9` or `< 10 or service > 100`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The value as configured, for messages and [`Trigger::source`].
    source: String,
    root: Node<Logic>,
}

/// What triggers add to the arithmetic tree.
#[derive(Debug, Clone, PartialEq)]
enum Logic {
    None,
    /// `first op1 a op2 b …`: Python's chain, `first op1 a and a op2 b …`.
    Compare(Node<Logic>, Vec<(CmpOp, Node<Logic>)>),
    Not(Node<Logic>),
    /// Two or more operands.
    And(Vec<Node<Logic>>),
    /// Two or more operands.
    Or(Vec<Node<Logic>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// The names a trigger may use, in the order suggestions prefer them.
const NAMES: [&str; 4] = ["service", "None", "True", "False"];

impl Trigger {
    /// Parses a Duct trigger value such as "> 0.5".
    ///
    /// Error offsets point into `value`, not into the `service ` Duct
    /// prefixed it with.
    pub fn parse(value: &str) -> Result<Trigger, ExprError> {
        let tokens = lex::tokenize(value)?;
        if tokens.is_empty() {
            return Err(ExprError::at(0, "empty trigger: expected a condition such as `> 0.9`"));
        }
        // Duct's implicit `service `, which the user never typed; it sits at
        // offset 0 only so the parser has something to say "after".
        let service = Token {
            kind: Tok::Name,
            text: "service",
            offset: 0,
        };
        let mut parser = Parser::new(std::iter::once(service).chain(tokens).collect(), value.len());
        let root = TriggerGrammar.expr(&mut parser)?;
        parser.finish()?;
        Ok(Trigger {
            source: value.to_owned(),
            root,
        })
    }

    /// True when the expression holds for this metric (None = the event has no metric).
    pub fn eval(&self, metric: Option<f64>) -> bool {
        value(&self.root, metric).is_ok_and(truthy)
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

struct TriggerGrammar;

impl TriggerGrammar {
    /// `and_expr ('or' and_expr)*`
    fn or(&self, p: &mut Parser<'_>) -> Result<Node<Logic>, ExprError> {
        let first = self.and(p)?;
        let mut operands = vec![first];
        while eat_keyword(p, "or") {
            operands.push(self.and(p)?);
        }
        Ok(combine(operands, Logic::Or))
    }

    /// `not_expr ('and' not_expr)*`
    fn and(&self, p: &mut Parser<'_>) -> Result<Node<Logic>, ExprError> {
        let first = self.not(p)?;
        let mut operands = vec![first];
        while eat_keyword(p, "and") {
            operands.push(self.not(p)?);
        }
        Ok(combine(operands, Logic::And))
    }

    /// `'not' not_expr | comparison`
    fn not(&self, p: &mut Parser<'_>) -> Result<Node<Logic>, ExprError> {
        let token = p.peek();
        if !is_keyword(token, "not") {
            return self.comparison(p);
        }
        p.bump();
        let operand = p.nested(token.offset, |p| self.not(p))?;
        Ok(Node::Ext(Box::new(Logic::Not(operand))))
    }

    /// `arith (cmp_op arith)*`
    fn comparison(&self, p: &mut Parser<'_>) -> Result<Node<Logic>, ExprError> {
        let first = p.arith(self)?;
        let mut rest = Vec::new();
        while let Some(op) = comparison_op(p.peek()) {
            p.bump();
            rest.push((op, p.arith(self)?));
        }
        if rest.is_empty() {
            return Ok(first);
        }
        Ok(Node::Ext(Box::new(Logic::Compare(first, rest))))
    }
}

impl Grammar for TriggerGrammar {
    type Ext = Logic;
    const OPERAND: &'static str = "a number or `service`";

    fn expr(&self, p: &mut Parser<'_>) -> Result<Node<Logic>, ExprError> {
        self.or(p)
    }

    fn name<'a>(&self, p: &mut Parser<'a>, name: Token<'a>) -> Result<Node<Logic>, ExprError> {
        if ["and", "or", "not"].contains(&name.text) {
            return Err(p.expected_operand(Self::OPERAND, name));
        }
        p.bump();
        if p.peek().kind == Tok::LParen {
            return Err(ExprError::at(
                name.offset,
                format!(
                    "`{}(…)`: a trigger cannot call functions; it can only compare `service`",
                    name.text
                ),
            ));
        }
        match name.text {
            "service" => Ok(Node::Var),
            "True" => Ok(Node::Num(1.0)),
            "False" => Ok(Node::Num(0.0)),
            "None" => Ok(Node::Ext(Box::new(Logic::None))),
            unknown => {
                let mut message = format!("unknown name `{unknown}`");
                match suggest(unknown, NAMES) {
                    Some(known) => message.push_str(&format!("; did you mean `{known}`?")),
                    None => message.push_str(
                        ": a trigger can only use `service` (the metric), numbers, \
                         `True`, `False` and `None`",
                    ),
                }
                Err(ExprError::at(name.offset, message))
            }
        }
    }
}

fn is_keyword(token: Token<'_>, keyword: &str) -> bool {
    token.kind == Tok::Name && token.text == keyword
}

fn eat_keyword(p: &mut Parser<'_>, keyword: &str) -> bool {
    let found = is_keyword(p.peek(), keyword);
    if found {
        p.bump();
    }
    found
}

/// One operand stays itself; several become an `and`/`or` node.
fn combine(mut operands: Vec<Node<Logic>>, node: fn(Vec<Node<Logic>>) -> Logic) -> Node<Logic> {
    match operands.len() {
        1 => operands.remove(0),
        _ => Node::Ext(Box::new(node(operands))),
    }
}

fn comparison_op(token: Token<'_>) -> Option<CmpOp> {
    match token.kind {
        Tok::Op(Op::Lt) => Some(CmpOp::Lt),
        Tok::Op(Op::Le) => Some(CmpOp::Le),
        Tok::Op(Op::Gt) => Some(CmpOp::Gt),
        Tok::Op(Op::Ge) => Some(CmpOp::Ge),
        Tok::Op(Op::EqEq) => Some(CmpOp::Eq),
        Tok::Op(Op::NotEq) => Some(CmpOp::Ne),
        _ => None,
    }
}

/// A Python value: a number (booleans are 1 and 0, as in Python) or `None`.
type Value = Option<f64>;

/// Python's `bool(value)`: NaN is truthy there too.
fn truthy(value: Value) -> bool {
    value.is_some_and(|v| v != 0.0)
}

fn from_bool(b: bool) -> Value {
    Some(if b { 1.0 } else { 0.0 })
}

/// Evaluates `node` to a Python value; `Err` where Python would raise.
fn value(node: &Node<Logic>, metric: Option<f64>) -> Result<Value, EvalError> {
    match node {
        // The two spots where `None` is a value rather than a failure.
        Node::Var => Ok(metric),
        Node::Ext(logic) => logic.value(metric),
        arithmetic => arithmetic.eval(&MetricEnv(metric)).map(Some),
    }
}

/// Arithmetic's view of the metric: `None` has no arithmetic.
struct MetricEnv(Option<f64>);

impl Env<Logic> for MetricEnv {
    fn var(&self) -> Result<f64, EvalError> {
        self.0.ok_or_else(|| EvalError("no metric to compute with".to_owned()))
    }

    fn ext(&self, logic: &Logic) -> Result<f64, EvalError> {
        logic
            .value(self.0)?
            .ok_or_else(|| EvalError("`None` in arithmetic".to_owned()))
    }
}

impl Logic {
    fn value(&self, metric: Option<f64>) -> Result<Value, EvalError> {
        match self {
            Logic::None => Ok(None),
            Logic::Not(operand) => Ok(from_bool(!truthy(value(operand, metric)?))),
            Logic::And(operands) => short_circuit(operands, metric, false),
            Logic::Or(operands) => short_circuit(operands, metric, true),
            // The one place failures stop: the comparison is just false.
            Logic::Compare(first, rest) => Ok(from_bool(chain_holds(first, rest, metric).unwrap_or(false))),
        }
    }
}

/// Python's `and` (`stop_on` false) or `or` (`stop_on` true): the first
/// operand whose truthiness is `stop_on`, else the last.
fn short_circuit(operands: &[Node<Logic>], metric: Option<f64>, stop_on: bool) -> Result<Value, EvalError> {
    let mut last = None;
    for operand in operands {
        let v = value(operand, metric)?;
        if truthy(v) == stop_on {
            return Ok(v);
        }
        last = v;
    }
    Ok(last)
}

/// A comparison chain, stopping at the first false link as Python does.
fn chain_holds(first: &Node<Logic>, rest: &[(CmpOp, Node<Logic>)], metric: Option<f64>) -> Result<bool, EvalError> {
    let mut left = value(first, metric)?;
    for (op, node) in rest {
        let right = value(node, metric)?;
        if !op.holds(left, right)? {
            return Ok(false);
        }
        left = right;
    }
    Ok(true)
}

impl CmpOp {
    fn holds(self, left: Value, right: Value) -> Result<bool, EvalError> {
        let order: fn(&f64, &f64) -> bool = match self {
            // Python: `None == None`, and `None` equals no number.
            CmpOp::Eq => return Ok(left == right),
            CmpOp::Ne => return Ok(left != right),
            CmpOp::Lt => f64::lt,
            CmpOp::Le => f64::le,
            CmpOp::Gt => f64::gt,
            CmpOp::Ge => f64::ge,
        };
        match (left, right) {
            (Some(l), Some(r)) => Ok(order(&l, &r)),
            _ => Err(EvalError("`None` cannot be ordered".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(value: &str) -> Trigger {
        Trigger::parse(value).unwrap_or_else(|e| panic!("{value:?} should parse: {e}"))
    }

    /// `value` evaluated at each metric, as a list of booleans.
    fn fires(value: &str, metrics: &[Option<f64>]) -> Vec<bool> {
        let t = trigger(value);
        metrics.iter().map(|&m| t.eval(m)).collect()
    }

    fn holds(value: &str, metric: f64) -> bool {
        trigger(value).eval(Some(metric))
    }

    fn error(value: &str) -> ExprError {
        match Trigger::parse(value) {
            Ok(t) => panic!("{value:?} should not parse, got {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_comparison_operator() {
        let metrics = [Some(0.4), Some(0.5), Some(0.6)];
        assert_eq!(fires("> 0.5", &metrics), [false, false, true]);
        assert_eq!(fires(">= 0.5", &metrics), [false, true, true]);
        assert_eq!(fires("< 0.5", &metrics), [true, false, false]);
        assert_eq!(fires("<= 0.5", &metrics), [true, true, false]);
        assert_eq!(fires("== 0.5", &metrics), [false, true, false]);
        assert_eq!(fires("!= 0.5", &metrics), [true, false, true]);
        // No spaces needed, as in Python.
        assert_eq!(fires(">0.5", &metrics), [false, false, true]);
        assert_eq!(fires("==.5", &metrics), [false, true, false]);
    }

    #[test]
    fn source_is_kept_verbatim() {
        assert_eq!(trigger("  > 0.9 ").source(), "  > 0.9 ");
    }

    #[test]
    fn chained_comparisons_are_pythons() {
        // service > 1 < 5  is  service > 1 and 1 < 5
        assert!(holds("> 1 < 5", 2.0));
        assert!(holds("> 1 < 5", 100.0));
        assert!(!holds("> 1 < 5", 0.0));
        // ... and  1 < 0 is false whatever the metric.
        assert!(!holds("> 1 < 0", 2.0));
        // A range check: 0 < 0.5 <= 1 written around service.
        assert_eq!(
            fires(">= 0 <= service <= 1", &[Some(-1.0), Some(0.5), Some(1.5)]),
            [false, true, false]
        );
        assert!(holds("== service == service", 3.0));
        assert!(holds("< 10 > 5 != 6", 3.0));
        assert!(!holds("< 10 > 5 != 5", 3.0));
    }

    #[test]
    fn boolean_operators_and_precedence() {
        let metrics = [Some(5.0), Some(50.0), Some(500.0)];
        assert_eq!(fires("< 10 or service > 100", &metrics), [true, false, true]);
        assert_eq!(fires("> 10 and service < 100", &metrics), [false, true, false]);
        // and binds tighter than or: a or (b and c)
        assert_eq!(
            fires("< 10 or service > 100 and service < 200", &metrics),
            [true, false, false]
        );
        // not binds looser than comparisons: not (service > 1)
        assert!(!trigger("> 1 and not service > 1").eval(Some(5.0)));
        assert_eq!(fires("> 10 and not service > 100", &metrics), [false, true, false]);
        assert!(holds("> 1 and not not service > 1", 5.0));
        // Parentheses override: (a or b) and c
        assert_eq!(
            fires("> 100 or (service < 10) and False", &metrics),
            [false, false, true]
        );
        assert_eq!(fires("> 100 or (service < 10) and True", &metrics), [true, false, true]);
        assert!(!holds("< 10 and (service > 1 or True) and False", 5.0));
        // Keywords are whole words: `order` is not `or`.
        assert_eq!(error("> 1 order").message, "unexpected `order` after `1`");
    }

    #[test]
    fn and_or_yield_operands_like_python() {
        // (service or 7): the metric when it is truthy, else 7.
        assert!(holds("+ 0 == 0 and (service or 7) == 7", 0.0));
        assert!(holds("+ 0 == 3 or (service and 9) == 9", 2.0));
        assert!(!holds("+ 0 == 3 or (service and 9) == 9", 0.0));
        // Booleans are 1 and 0 in arithmetic.
        assert!(holds("> 1 == True", 2.0));
        assert!(holds("* 0 + (service > 1) + (service > 2) == 2", 3.0));
        assert!(holds("+ True * 3 == 4", 1.0));
    }

    #[test]
    fn arithmetic_follows_python_precedence() {
        assert!(holds("== 2 + 3 * 4", 14.0));
        assert!(holds("== (2 + 3) * 4", 20.0));
        assert!(holds("== 10 - 4 - 3", 3.0));
        assert!(holds("== 2 ** 3 ** 2", 512.0));
        assert!(holds("== -2 ** 2", -4.0));
        assert!(holds("== (-2) ** 2", 4.0));
        assert!(holds("== 2 ** -1", 0.5));
        assert!(holds("== -7 % 3", 2.0));
        assert!(holds("== 7 % -3", -2.0));
        assert!(holds("== 7 // 2", 3.0));
        assert!(holds("== -7 // 2", -4.0));
        assert!(holds("== 7 / 2", 3.5));
        assert!(holds("== - - 3", 3.0));
        assert!(holds("== +-+3", -3.0));
        assert!(holds("* 2 > 10", 6.0));
        assert!(!holds("* 2 > 10", 4.0));
        assert!(holds("/ 1_000 > 0.5", 600.0));
        assert!(holds("% 2 == 1", 7.0));
        assert!(holds("** 2 == 49", 7.0));
        assert!(holds("- 1 == 1e0", 2.0));
    }

    #[test]
    fn top_level_value_uses_python_truthiness() {
        assert_eq!(
            fires("+ 1", &[Some(-1.0), Some(0.0), Some(1.0), None]),
            [false, true, true, false]
        );
        assert_eq!(fires("* 0", &[Some(5.0)]), [false]);
        assert_eq!(fires("or 0", &[Some(5.0), Some(0.0)]), [true, false]);
        assert_eq!(fires("and 1", &[Some(0.0), Some(2.0)]), [false, true]);
        // NaN is truthy in Python.
        assert_eq!(fires("or False", &[Some(f64::NAN)]), [true]);
    }

    #[test]
    fn absent_metric() {
        for value in ["> 0.5", "< 0.5", ">= 0", "<= 0", "> -1e300 < 5", "+ 1 > 0"] {
            assert!(!trigger(value).eval(None), "{value:?} with no metric");
        }
        assert_eq!(fires("== None", &[None, Some(0.0)]), [true, false]);
        assert_eq!(fires("!= None", &[None, Some(0.0)]), [false, true]);
        assert_eq!(fires("== 0", &[None]), [false]);
        assert_eq!(fires("!= 0", &[None]), [true]);
        // The comparison is false, the rest of the expression still counts.
        assert_eq!(
            fires("> 100 or service == None", &[None, Some(5.0), Some(500.0)]),
            [true, false, true]
        );
        // ... which makes `not` of a failed comparison true.
        assert_eq!(
            fires("> 0 or not service < 5", &[None, Some(-9.0), Some(9.0)]),
            [true, false, true]
        );
        // `not` of a plain None is Python's `not None`.
        assert_eq!(
            fires("or not service", &[None, Some(0.0), Some(3.0)]),
            [true, true, true]
        );
        assert_eq!(fires("and True", &[None]), [false]);
        // Ordering against the literal None is false even with a metric.
        assert_eq!(fires("> None", &[Some(1.0), None]), [false, false]);
        assert_eq!(fires("== +None", &[None]), [false]);
    }

    #[test]
    fn failures_make_the_comparison_false() {
        assert!(!holds("/ 0 > 1", 5.0));
        assert!(!holds("/ 0 < 1", 5.0));
        assert!(!holds("% 0 == 0", 5.0));
        assert!(!holds("> 1 / 0", 5.0));
        assert!(holds("> 1 / 0 or service > 1", 5.0));
        assert!(!holds("** 1000 > 1", 10.0));
        // Outside any comparison the whole trigger fails: not triggered.
        assert!(!holds("/ 0", 5.0));
        assert!(!holds("// 0 or True", 5.0));
        // Division is fine while the divisor is not zero.
        assert_eq!(fires("> 10 / service", &[Some(4.0), Some(0.0)]), [true, false]);
    }

    #[test]
    fn numeric_literal_forms() {
        assert!(holds("== 1_000", 1000.0));
        assert!(holds("== 1e3", 1000.0));
        assert!(holds("== .5", 0.5));
        assert!(holds("== 5.", 5.0));
        assert!(holds("== 0x10", 16.0));
        assert!(holds("== 2.5E-1", 0.25));
    }

    #[test]
    fn junk_is_rejected_with_offsets_into_the_value() {
        for (value, offset, message) in [
            (">", 1, "expected a number or `service` after `>`"),
            ("> 0.5 and", 9, "expected a number or `service` after `and`"),
            ("=> 3", 0, "`=>` is not an operator; did you mean `>=`?"),
            (
                "> abc",
                2,
                "unknown name `abc`: a trigger can only use `service` (the metric), \
                 numbers, `True`, `False` and `None`",
            ),
            ("> servce", 2, "unknown name `servce`; did you mean `service`?"),
            ("== none", 3, "unknown name `none`; did you mean `None`?"),
            ("> (1", 4, "missing `)` to close the `(` at column 3"),
            ("> ((1)", 6, "missing `)` to close the `(` at column 3"),
            ("> 1)", 3, "unmatched `)`"),
            ("> (1 2)", 5, "expected `)` to close the `(` at column 3, found `2`"),
            ("> 1 2", 4, "unexpected `2` after `1`"),
            ("2", 0, "unexpected `2` after `service`"),
            ("", 0, "empty trigger: expected a condition such as `> 0.9`"),
            ("   ", 0, "empty trigger: expected a condition such as `> 0.9`"),
            (
                "> abs(1)",
                2,
                "`abs(…)`: a trigger cannot call functions; it can only compare `service`",
            ),
            (
                "(1)",
                0,
                "`service(…)`: a trigger cannot call functions; it can only compare `service`",
            ),
            ("> service.real", 9, "unexpected `.`: attribute access is not supported"),
            ("== 'up'", 3, "strings are not supported"),
            ("> [1]", 2, "unexpected character `[`"),
            ("> and 1", 2, "expected a number or `service` after `>`, found `and`"),
            ("> not 1", 2, "expected a number or `service` after `>`, found `not`"),
            (
                "> 1 and or 2",
                8,
                "expected a number or `service` after `and`, found `or`",
            ),
            ("> )", 2, "expected a number or `service` after `>`, found `)`"),
            ("> 1 *", 5, "expected a number or `service` after `*`"),
            ("> 1, 2", 3, "unexpected `,` after `1`"),
            ("> 1 if True else 0", 4, "unexpected `if` after `1`"),
            ("is None", 0, "`is` is not supported; write `== None` or `!= None`"),
            ("not 1", 0, "unexpected `not` after `service`"),
            ("> 1 ==", 6, "expected a number or `service` after `==`"),
            ("> - ", 4, "expected a number or `service` after `-`"),
            ("> 2 **", 6, "expected a number or `service` after `**`"),
            ("> 1_", 2, "invalid number `1_`"),
            ("> 5 = 5", 4, "`=` is not an operator; did you mean `==`?"),
        ] {
            assert_eq!(error(value), ExprError::at(offset, message), "parsing {value:?}");
        }
    }

    #[test]
    fn error_display_counts_columns_from_one() {
        assert_eq!(
            error(">").to_string(),
            "at column 2: expected a number or `service` after `>`"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("> {}1{}", "(".repeat(200), ")".repeat(200));
        assert!(error(&deep).message.starts_with("expression nested too deeply"));
        let negations = format!("== {}1", "-".repeat(200));
        assert!(error(&negations).message.starts_with("expression nested too deeply"));
        let nots = format!("or {}True", "not ".repeat(200));
        assert!(error(&nots).message.starts_with("expression nested too deeply"));
        // Up to the limit is fine.
        let ok = format!("== {}1{}", "(".repeat(64), ")".repeat(64));
        assert!(holds(&ok, 1.0));
    }

    #[test]
    fn long_flat_chains_evaluate() {
        let sum = format!("== {}1", "1 + ".repeat(200));
        assert!(holds(&sum, 201.0));
    }

    #[test]
    fn triggers_are_clone_and_comparable() {
        let t = trigger("> 0.5 and service < 1");
        assert_eq!(t.clone(), t);
        assert_ne!(trigger("> 0.5"), trigger("> 0.6"));
    }
}
