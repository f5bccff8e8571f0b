//! The arithmetic core both dialects share: a recursive-descent parser for
//! Python's `+ - * / // % **` and unary `+`/`-` over numbers, one variable
//! and parenthesised groups, the tree it builds, and Python's float
//! semantics for evaluating it.
//!
//! A dialect plugs in through [`Grammar`] (what a name means, and what a
//! whole expression is, which is also what a parenthesised group holds) and
//! [`Env`] (the variable's value and how to evaluate the dialect's own
//! nodes). Precedence, loosest first: `+ -`, then `* / // %`, then unary
//! `+ -`, then `**`, which is right-associative and takes a unary operand on
//! its right: `-2**2` is `-(2**2)` and `2**-1` is `0.5`, as in Python.

use super::lex::{Op, Tok, Token};
use super::{EvalError, ExprError};

/// How deep parentheses, unary operators, `**` chains and `not`s may nest.
/// Python's own parser stops at a similar depth; the limit keeps the
/// recursion bounded on hostile input.
const MAX_NESTING: usize = 64;

/// An expression tree; `X` is the dialect's own node type (function calls,
/// comparisons), reached through [`Node::Ext`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node<X> {
    /// A float literal, or a constant (`pi`).
    Num(f64),
    /// An integer literal (`5`, `0x1f`): Python keeps its type, an `int`.
    Int(f64),
    /// The dialect's one variable: `service` or `x`.
    Var,
    Unary(UnaryOp, Box<Node<X>>),
    Binary(BinOp, Box<Node<X>>, Box<Node<X>>),
    Ext(Box<X>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnaryOp {
    Neg,
    /// Kept rather than dropped so `+None` still fails like Python's.
    Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
}

const ADDITIVE: &[(Op, BinOp)] = &[(Op::Plus, BinOp::Add), (Op::Minus, BinOp::Sub)];
const MULTIPLICATIVE: &[(Op, BinOp)] = &[
    (Op::Star, BinOp::Mul),
    (Op::Slash, BinOp::Div),
    (Op::SlashSlash, BinOp::FloorDiv),
    (Op::Percent, BinOp::Mod),
];

/// What a dialect adds to the shared arithmetic.
pub(super) trait Grammar {
    type Ext;
    /// How to describe an operand in "expected …" messages.
    const OPERAND: &'static str;
    /// A whole expression: the top level, and what parentheses enclose.
    fn expr(&self, p: &mut Parser<'_>) -> Result<Node<Self::Ext>, ExprError>;
    /// The operand starting with the name `name`, which `p` has peeked but
    /// not consumed (so errors about it can still say what preceded it).
    fn name<'a>(&self, p: &mut Parser<'a>, name: Token<'a>) -> Result<Node<Self::Ext>, ExprError>;
}

/// What evaluation needs from a dialect.
pub(super) trait Env<X> {
    /// The variable's value, or why it has none.
    fn var(&self) -> Result<f64, EvalError>;
    /// The value of one of the dialect's own nodes.
    fn ext(&self, ext: &X) -> Result<f64, EvalError>;
}

impl<X> Node<X> {
    /// Whether Python would give an `int` here, `var` telling whether the
    /// variable is one and `ext` the same for the dialect's nodes: an
    /// integer literal is, a float literal is not, `/` never is, and the
    /// other operators are when both operands are (`**` also needs a
    /// non-negative exponent, which only the value can tell).
    pub(super) fn integral(&self, var: bool, ext: &impl Fn(&X) -> bool) -> bool {
        match self {
            Node::Int(_) => true,
            Node::Num(_) => false,
            Node::Var => var,
            Node::Unary(_, operand) => operand.integral(var, ext),
            Node::Binary(BinOp::Div, ..) => false,
            Node::Binary(_, left, right) => left.integral(var, ext) && right.integral(var, ext),
            Node::Ext(x) => ext(x),
        }
    }

    pub(super) fn eval(&self, env: &impl Env<X>) -> Result<f64, EvalError> {
        match self {
            Node::Num(v) | Node::Int(v) => Ok(*v),
            Node::Var => env.var(),
            Node::Unary(UnaryOp::Neg, operand) => Ok(-operand.eval(env)?),
            Node::Unary(UnaryOp::Pos, operand) => operand.eval(env),
            Node::Binary(op, left, right) => op.apply(left.eval(env)?, right.eval(env)?),
            Node::Ext(ext) => env.ext(ext),
        }
    }
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Pow => "**",
        }
    }

    /// `a op b` with Python's float semantics, except that overflowing to
    /// infinity is an error (Python only raises for `**`; see the module
    /// docs of `expr` for why we always do).
    pub(super) fn apply(self, a: f64, b: f64) -> Result<f64, EvalError> {
        let fail = |problem: &str| Err(EvalError(format!("{problem}: {a:?} {} {b:?}", self.symbol())));
        let result = match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div | BinOp::FloorDiv | BinOp::Mod if b == 0.0 => return fail("division by zero"),
            BinOp::Div => a / b,
            BinOp::FloorDiv => python_divmod(a, b).0,
            BinOp::Mod => python_divmod(a, b).1,
            // Python: anything to the power 0 is 1, even NaN.
            BinOp::Pow if b == 0.0 => 1.0,
            BinOp::Pow if a == 0.0 && b < 0.0 => return fail("division by zero (zero to a negative power)"),
            BinOp::Pow if a < 0.0 && b.is_finite() && b.fract() != 0.0 => {
                return fail("math domain error (negative number to a fractional power)")
            }
            BinOp::Pow => a.powf(b),
        };
        if result.is_infinite() && a.is_finite() && b.is_finite() {
            return fail("overflow (result too large)");
        }
        Ok(result)
    }
}

/// Python's float `divmod` (CPython's `float_divmod`), for `b != 0`: the
/// remainder takes the divisor's sign and the quotient is rounded the way
/// Python rounds it, so `1 // 0.1` is 9, not `floor(1 / 0.1)` = 10.
fn python_divmod(a: f64, b: f64) -> (f64, f64) {
    let mut rem = a % b;
    let mut div = (a - rem) / b;
    if rem != 0.0 {
        if (b < 0.0) != (rem < 0.0) {
            rem += b;
            div -= 1.0;
        }
    } else {
        rem = 0.0_f64.copysign(b);
    }
    let floordiv = if div != 0.0 {
        let floor = div.floor();
        if div - floor > 0.5 {
            floor + 1.0
        } else {
            floor
        }
    } else {
        0.0_f64.copysign(a / b)
    };
    (floordiv, rem)
}

/// A cursor over tokens, with the arithmetic half of the grammar.
pub(super) struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    /// Index of the next token; `tokens.len()` once all are consumed.
    pos: usize,
    /// Where the `End` token sits: the length of the source.
    end: usize,
    /// Current recursion depth, held under [`MAX_NESTING`].
    depth: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(tokens: Vec<Token<'a>>, end: usize) -> Parser<'a> {
        Parser {
            tokens,
            pos: 0,
            end,
            depth: 0,
        }
    }

    pub(super) fn peek(&self) -> Token<'a> {
        self.tokens.get(self.pos).copied().unwrap_or(Token {
            kind: Tok::End,
            text: "",
            offset: self.end,
        })
    }

    pub(super) fn bump(&mut self) -> Token<'a> {
        let token = self.peek();
        self.pos = (self.pos + 1).min(self.tokens.len());
        token
    }

    /// Consumes the next token if it is `kind`.
    pub(super) fn eat(&mut self, kind: Tok) -> bool {
        let matched = self.peek().kind == kind;
        if matched {
            self.bump();
        }
        matched
    }

    /// The token before the next one, for "after `…`" in messages.
    fn previous(&self) -> Option<Token<'a>> {
        self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)).copied()
    }

    /// "expected a number … after `>`", pointing at `found`, the next token.
    pub(super) fn expected_operand(&self, operand: &str, found: Token<'_>) -> ExprError {
        let mut message = format!("expected {operand}");
        if let Some(previous) = self.previous() {
            message.push_str(&format!(" after `{}`", previous.text));
        }
        if found.kind != Tok::End {
            message.push_str(&format!(", found `{}`", found.text));
        }
        ExprError::at(found.offset, message)
    }

    /// Succeeds only if every token was consumed.
    pub(super) fn finish(&self) -> Result<(), ExprError> {
        let token = self.peek();
        let message = match token.kind {
            Tok::End => return Ok(()),
            Tok::RParen => "unmatched `)`".to_owned(),
            Tok::Name if token.text == "is" => "`is` is not supported; write `== None` or `!= None`".to_owned(),
            _ => match self.previous() {
                Some(previous) => format!("unexpected `{}` after `{}`", token.text, previous.text),
                None => format!("unexpected `{}`", token.text),
            },
        };
        Err(ExprError::at(token.offset, message))
    }

    /// Consumes the `)` matching `open`.
    pub(super) fn close_paren(&mut self, open: Token<'_>) -> Result<(), ExprError> {
        if self.eat(Tok::RParen) {
            return Ok(());
        }
        let found = self.peek();
        let column = open.offset + 1;
        let message = match found.kind {
            Tok::End => format!("missing `)` to close the `(` at column {column}"),
            _ => format!(
                "expected `)` to close the `(` at column {column}, found `{}`",
                found.text
            ),
        };
        Err(ExprError::at(found.offset, message))
    }

    /// Runs `inner` one nesting level deeper; `offset` is blamed if that is
    /// too deep.
    pub(super) fn nested<T>(
        &mut self,
        offset: usize,
        inner: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        if self.depth == MAX_NESTING {
            return Err(ExprError::at(
                offset,
                format!("expression nested too deeply (more than {MAX_NESTING} levels)"),
            ));
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    /// `term (('+' | '-') term)*`
    pub(super) fn arith<G: Grammar>(&mut self, g: &G) -> Result<Node<G::Ext>, ExprError> {
        let mut left = self.term(g)?;
        while let Some(op) = self.binary_op(ADDITIVE) {
            let right = self.term(g)?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `factor (('*' | '/' | '//' | '%') factor)*`
    fn term<G: Grammar>(&mut self, g: &G) -> Result<Node<G::Ext>, ExprError> {
        let mut left = self.factor(g)?;
        while let Some(op) = self.binary_op(MULTIPLICATIVE) {
            let right = self.factor(g)?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `('+' | '-') factor | power`
    fn factor<G: Grammar>(&mut self, g: &G) -> Result<Node<G::Ext>, ExprError> {
        let token = self.peek();
        let op = match token.kind {
            Tok::Op(Op::Minus) => UnaryOp::Neg,
            Tok::Op(Op::Plus) => UnaryOp::Pos,
            _ => return self.power(g),
        };
        self.bump();
        let operand = self.nested(token.offset, |p| p.factor(g))?;
        Ok(Node::Unary(op, Box::new(operand)))
    }

    /// `atom ('**' factor)?`
    fn power<G: Grammar>(&mut self, g: &G) -> Result<Node<G::Ext>, ExprError> {
        let base = self.atom(g)?;
        let token = self.peek();
        if token.kind != Tok::Op(Op::StarStar) {
            return Ok(base);
        }
        self.bump();
        let exponent = self.nested(token.offset, |p| p.factor(g))?;
        Ok(Node::Binary(BinOp::Pow, Box::new(base), Box::new(exponent)))
    }

    /// A number, a name (the grammar's business) or `( expr )`.
    fn atom<G: Grammar>(&mut self, g: &G) -> Result<Node<G::Ext>, ExprError> {
        let token = self.peek();
        match token.kind {
            Tok::Num(v) => {
                self.bump();
                let text = token.text.to_ascii_lowercase();
                let integer = text.starts_with("0x") || !text.contains(['.', 'e']);
                Ok(if integer { Node::Int(v) } else { Node::Num(v) })
            }
            Tok::Name => g.name(self, token),
            Tok::LParen => {
                self.bump();
                let inner = self.nested(token.offset, |p| g.expr(p))?;
                self.close_paren(token)?;
                Ok(inner)
            }
            _ => Err(self.expected_operand(G::OPERAND, token)),
        }
    }

    fn binary_op(&mut self, table: &[(Op, BinOp)]) -> Option<BinOp> {
        let Tok::Op(op) = self.peek().kind else {
            return None;
        };
        let (_, binary) = table.iter().find(|(candidate, _)| *candidate == op)?;
        self.bump();
        Some(*binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floored_modulo_and_division_match_python() {
        assert_eq!(BinOp::Mod.apply(-7.0, 3.0), Ok(2.0));
        assert_eq!(BinOp::Mod.apply(7.0, -3.0), Ok(-2.0));
        assert_eq!(BinOp::Mod.apply(-7.0, -3.0), Ok(-1.0));
        assert_eq!(BinOp::Mod.apply(7.5, 2.0), Ok(1.5));
        assert_eq!(BinOp::FloorDiv.apply(7.0, 2.0), Ok(3.0));
        assert_eq!(BinOp::FloorDiv.apply(-7.0, 2.0), Ok(-4.0));
        assert_eq!(BinOp::FloorDiv.apply(7.0, -2.0), Ok(-4.0));
        // Python's rounding, not floor(1 / 0.1) == 10.
        assert_eq!(BinOp::FloorDiv.apply(1.0, 0.1), Ok(9.0));
        assert_eq!(BinOp::Mod.apply(1.0, 0.1), Ok(0.09999999999999995));
        // The zero remainder takes the divisor's sign, as in Python.
        let zero = BinOp::Mod.apply(6.0, -3.0).expect("defined");
        assert!(zero == 0.0 && zero.is_sign_negative());
    }

    #[test]
    fn powers_match_python() {
        assert_eq!(BinOp::Pow.apply(2.0, 10.0), Ok(1024.0));
        assert_eq!(BinOp::Pow.apply(2.0, -1.0), Ok(0.5));
        assert_eq!(BinOp::Pow.apply(-8.0, 3.0), Ok(-512.0));
        assert_eq!(BinOp::Pow.apply(0.0, 0.0), Ok(1.0));
        assert_eq!(BinOp::Pow.apply(f64::NAN, 0.0), Ok(1.0));
        assert_eq!(BinOp::Pow.apply(4.0, 0.5), Ok(2.0));
    }

    #[test]
    fn python_errors_become_eval_errors() {
        for (op, a, b, message) in [
            (BinOp::Div, 1.0, 0.0, "division by zero: 1.0 / 0.0"),
            (BinOp::FloorDiv, 1.0, 0.0, "division by zero: 1.0 // 0.0"),
            (BinOp::Mod, 5.0, -0.0, "division by zero: 5.0 % -0.0"),
            (
                BinOp::Pow,
                0.0,
                -1.0,
                "division by zero (zero to a negative power): 0.0 ** -1.0",
            ),
            (
                BinOp::Pow,
                -8.0,
                0.5,
                "math domain error (negative number to a fractional power): -8.0 ** 0.5",
            ),
            (BinOp::Pow, 10.0, 400.0, "overflow (result too large): 10.0 ** 400.0"),
            (BinOp::Mul, 1e308, 10.0, "overflow (result too large): 1e308 * 10.0"),
            (BinOp::Sub, -1e308, 1e308, "overflow (result too large): -1e308 - 1e308"),
        ] {
            assert_eq!(op.apply(a, b), Err(EvalError(message.to_owned())), "{a} {op:?} {b}");
        }
    }

    #[test]
    fn infinite_operands_are_not_an_overflow() {
        assert_eq!(BinOp::Add.apply(f64::INFINITY, 1.0), Ok(f64::INFINITY));
    }
}
