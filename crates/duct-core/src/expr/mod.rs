//! Expressions written in configuration, parsed once at load and evaluated
//! per event, in place of the Python `eval` Duct used.
//!
//! Two dialects share one tokenizer (`lex`) and one arithmetic core
//! (`arith`): [`Trigger`] is a source's `warning:`/`critical:` value such as
//! `"> 0.9"`, read as the Python expression `service > 0.9`; [`MathExpr`] is
//! the Function source's `function:` such as `"sin(x)"`. Each dialect adds
//! its own names and, for triggers, comparisons and `and`/`or`/`not` on top
//! of the shared arithmetic. Numbers follow Python's float semantics
//! (floored `%` and `//`, `**` binding tighter than unary minus) with one
//! deliberate difference: arithmetic whose result overflows to infinity is
//! an error rather than `inf`, because no output can carry an infinite
//! metric.

mod arith;
mod lex;
mod math;
mod trigger;

pub use math::MathExpr;
pub use trigger::Trigger;

/// Why an expression was rejected at load time, pointing into the text the
/// user wrote.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at column {}: {}", .offset + 1, .message)]
pub struct ExprError {
    /// Byte offset into the expression as written (for a trigger, the value
    /// without Duct's implicit `service ` prefix).
    pub offset: usize,
    pub message: String,
}

impl ExprError {
    fn at(offset: usize, message: impl Into<String>) -> ExprError {
        ExprError {
            offset,
            message: message.into(),
        }
    }
}

/// Why a parsed expression had no value for this input, where Python would
/// have raised (division by zero, a math domain error, overflow).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// The closest of `known` to a misspelt `name` (see
/// [`crate::config::suggest`]); callers list common names first, as ties go
/// to the earlier entry.
fn suggest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    crate::config::suggest(name, known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_is_one_based_column() {
        let e = ExprError::at(4, "unexpected `2` after `1`");
        assert_eq!(e.to_string(), "at column 5: unexpected `2` after `1`");
        assert_eq!(EvalError("boom".into()).to_string(), "boom");
    }

    #[test]
    fn suggestions_prefer_the_earliest_closest_name() {
        assert_eq!(suggest("sine", ["sin", "sinh"]), Some("sin"));
        assert_eq!(suggest("sinhh", ["sin", "sinh"]), Some("sinh"));
        assert_eq!(suggest("servce", ["service"]), Some("service"));
        assert_eq!(suggest("foo", ["sin", "cos"]), None);
        assert_eq!(suggest("none", ["True", "None"]), Some("None"));
        assert_eq!(suggest("completely", ["sin"]), None);
    }
}
