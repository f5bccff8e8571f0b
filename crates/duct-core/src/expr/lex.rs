//! The tokenizer both expression dialects share.
//!
//! It reads Python's number literals (including `1_000`, `.5`, `5.`, `1e3`
//! and `0x`/`0o`/`0b` integers), ASCII names, the arithmetic and comparison
//! operators, parentheses and commas, and remembers where each token starts
//! so parse errors can point at it. Characters outside that set are
//! rejected here, with a hint when the user probably meant something else
//! (`=>` for `>=`, `&&` for `and`, `^` for `**`).

use super::ExprError;

/// More tokens than any sensible trigger or function needs. The cap bounds
/// the depth of the tree the parser builds (a left-associative chain such
/// as `1+1+1+…` is as deep as it is long) and so the recursion that later
/// walks and drops it, whatever the configuration file contains.
const MAX_TOKENS: usize = 512;

/// An operator as written; each parser maps the ones its grammar accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Plus,
    Minus,
    Star,
    Slash,
    SlashSlash,
    Percent,
    StarStar,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    NotEq,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    /// A name or keyword; its spelling is the token's `text`.
    Name,
    Op(Op),
    LParen,
    RParen,
    Comma,
    /// Past the last token; the parser produces it rather than storing it.
    End,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Token<'a> {
    pub kind: Tok,
    /// The token as written: a name's spelling, and what error messages
    /// quote back to the user.
    pub text: &'a str,
    /// Byte offset into the expression as the user wrote it.
    pub offset: usize,
}

/// Splits `src` into tokens (without a final `End`).
pub(super) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, ExprError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if tokens.len() == MAX_TOKENS {
            return Err(ExprError::at(
                i,
                format!("expression too long: more than {MAX_TOKENS} tokens"),
            ));
        }
        let starts_number = b.is_ascii_digit() || (b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        let (kind, len) = if starts_number {
            number(src, i)?
        } else if is_name_start(b) {
            (Tok::Name, name_len(bytes, i))
        } else {
            punctuation(src, i)?
        };
        tokens.push(Token {
            kind,
            text: &src[i..i + len],
            offset: i,
        });
        i += len;
    }
    Ok(tokens)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn name_len(bytes: &[u8], start: usize) -> usize {
    bytes[start..].iter().take_while(|&&b| is_name_char(b)).count()
}

/// Operators and punctuation starting at `i`, with their length.
fn punctuation(src: &str, i: usize) -> Result<(Tok, usize), ExprError> {
    let bytes = src.as_bytes();
    let next = bytes.get(i + 1).copied();
    let op = |op, len| Ok((Tok::Op(op), len));
    let fail = |message: &str| Err(ExprError::at(i, message));
    match (bytes[i], next) {
        (b'+', _) => op(Op::Plus, 1),
        (b'-', _) => op(Op::Minus, 1),
        (b'*', Some(b'*')) => op(Op::StarStar, 2),
        (b'*', _) => op(Op::Star, 1),
        (b'/', Some(b'/')) => op(Op::SlashSlash, 2),
        (b'/', _) => op(Op::Slash, 1),
        (b'%', _) => op(Op::Percent, 1),
        (b'<', Some(b'=')) => op(Op::Le, 2),
        (b'<', Some(b'>')) => fail("`<>` is not an operator; did you mean `!=`?"),
        (b'<', _) => op(Op::Lt, 1),
        (b'>', Some(b'=')) => op(Op::Ge, 2),
        (b'>', _) => op(Op::Gt, 1),
        (b'=', Some(b'=')) => op(Op::EqEq, 2),
        (b'=', Some(b'>')) => fail("`=>` is not an operator; did you mean `>=`?"),
        (b'=', Some(b'<')) => fail("`=<` is not an operator; did you mean `<=`?"),
        (b'=', _) => fail("`=` is not an operator; did you mean `==`?"),
        (b'!', Some(b'=')) => op(Op::NotEq, 2),
        (b'!', _) => fail("`!` is not an operator; use `not` (or `!=`)"),
        (b'(', _) => Ok((Tok::LParen, 1)),
        (b')', _) => Ok((Tok::RParen, 1)),
        (b',', _) => Ok((Tok::Comma, 1)),
        (b'&', _) => fail("`&` is not supported; for a logical and, write `and`"),
        (b'|', _) => fail("`|` is not supported; for a logical or, write `or`"),
        (b'^', _) => fail("`^` is not supported; for a power, write `**`"),
        (b'"' | b'\'', _) => fail("strings are not supported"),
        (b'.', _) => fail("unexpected `.`: attribute access is not supported"),
        _ => {
            // Name the whole character, which may be several bytes long.
            let c = src[i..].chars().next().unwrap_or('\u{fffd}');
            fail(&format!("unexpected character `{c}`"))
        }
    }
}

/// A Python number literal starting at `start`, which is a digit or a `.`
/// followed by one.
fn number(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let bytes = src.as_bytes();
    let radix = match (bytes[start], bytes.get(start + 1).map(u8::to_ascii_lowercase)) {
        (b'0', Some(b'x')) => Some(16),
        (b'0', Some(b'o')) => Some(8),
        (b'0', Some(b'b')) => Some(2),
        _ => None,
    };
    let (end, value) = match radix {
        Some(radix) => prefixed_integer(bytes, start, radix),
        None => decimal(src, start)?,
    };
    if let Some(&b) = bytes.get(end) {
        if is_name_char(b) {
            let glued = end + name_len(bytes, end);
            let text = &src[start..glued];
            let message = if b == b'j' || b == b'J' {
                format!("invalid number `{text}`: complex numbers are not supported")
            } else {
                format!("invalid number `{text}`")
            };
            return Err(ExprError::at(start, message));
        }
    }
    match value {
        Some(v) => Ok((Tok::Num(v), end - start)),
        None => Err(ExprError::at(start, format!("invalid number `{}`", &src[start..end]))),
    }
}

/// Digits with single underscores between them, as Python allows, starting
/// at `i`; returns where they end, or `None` if there is no digit at `i`.
fn digit_part(bytes: &[u8], mut i: usize, is_digit: impl Fn(u8) -> bool) -> Option<usize> {
    if !bytes.get(i).is_some_and(|&b| is_digit(b)) {
        return None;
    }
    loop {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(&b), _) if is_digit(b) => i += 1,
            (Some(b'_'), Some(&b)) if is_digit(b) => i += 2,
            // A stray `_` is left for the caller to report as a glued name.
            _ => return Some(i),
        }
    }
}

/// `0x…`, `0o…` or `0b…`: the end and the value (`None` if no digits).
fn prefixed_integer(bytes: &[u8], start: usize, radix: u32) -> (usize, Option<f64>) {
    let is_digit = |b: u8| char::from(b).is_digit(radix);
    let mut i = start + 2;
    // Python allows one underscore straight after the prefix: `0x_ff`.
    if bytes.get(i) == Some(&b'_') && bytes.get(i + 1).is_some_and(|&b| is_digit(b)) {
        i += 1;
    }
    let Some(end) = digit_part(bytes, i, is_digit) else {
        return (start + 2, None);
    };
    let value = bytes[i..end]
        .iter()
        .filter_map(|&b| char::from(b).to_digit(radix))
        .fold(0.0, |acc, d| acc * f64::from(radix) + f64::from(d));
    (end, Some(value))
}

/// A decimal integer or float: the end and the value (`None` if malformed).
fn decimal(src: &str, start: usize) -> Result<(usize, Option<f64>), ExprError> {
    let bytes = src.as_bytes();
    let is_digit = |b: u8| b.is_ascii_digit();
    let mut end = digit_part(bytes, start, is_digit).unwrap_or(start);
    let mut is_float = false;
    if bytes.get(end) == Some(&b'.') {
        is_float = true;
        end = digit_part(bytes, end + 1, is_digit).unwrap_or(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exponent = end + 1;
        if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        // Without digits the `e` stays outside and is reported as glued on.
        if let Some(e) = digit_part(bytes, exponent, is_digit) {
            end = e;
            is_float = true;
        }
    }
    let digits: String = src[start..end].chars().filter(|&c| c != '_').collect();
    if !is_float && digits.starts_with('0') && digits.bytes().any(|b| b != b'0') {
        return Err(ExprError::at(
            start,
            format!(
                "invalid number `{}`: leading zeros are not allowed (write `0o…` for octal)",
                &src[start..end]
            ),
        ));
    }
    Ok((end, digits.parse::<f64>().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        tokenize(src).expect("valid input").iter().map(|t| t.kind).collect()
    }

    fn number_of(src: &str) -> f64 {
        match kinds(src).as_slice() {
            [Tok::Num(v)] => *v,
            other => panic!("{src:?} lexed as {other:?}"),
        }
    }

    fn error(src: &str) -> ExprError {
        tokenize(src).expect_err("invalid input")
    }

    #[test]
    fn python_number_literals() {
        assert_eq!(number_of("0"), 0.0);
        assert_eq!(number_of("00"), 0.0);
        assert_eq!(number_of("42"), 42.0);
        assert_eq!(number_of("1_000"), 1000.0);
        assert_eq!(number_of("1_000.000_5"), 1000.0005);
        assert_eq!(number_of("0.5"), 0.5);
        assert_eq!(number_of(".5"), 0.5);
        assert_eq!(number_of("5."), 5.0);
        assert_eq!(number_of("1e3"), 1000.0);
        assert_eq!(number_of("1E-3"), 0.001);
        assert_eq!(number_of("2.5e+2"), 250.0);
        assert_eq!(number_of("1.e3"), 1000.0);
        assert_eq!(number_of(".5e1"), 5.0);
        assert_eq!(number_of("1_0e1_0"), 1e11);
        assert_eq!(number_of("007.5"), 7.5);
        assert_eq!(number_of("0e0"), 0.0);
        assert_eq!(number_of("0x1f"), 31.0);
        assert_eq!(number_of("0XFF"), 255.0);
        assert_eq!(number_of("0x_ff"), 255.0);
        assert_eq!(number_of("0o17"), 15.0);
        assert_eq!(number_of("0b1010"), 10.0);
        assert_eq!(number_of("0b_1_0"), 2.0);
    }

    #[test]
    fn malformed_numbers_are_rejected_at_their_start() {
        for (src, offset, message) in [
            ("1_", 0, "invalid number `1_`"),
            ("1__0", 0, "invalid number `1__0`"),
            ("x 1e", 2, "invalid number `1e`"),
            ("1e+", 0, "invalid number `1e`"),
            ("12abc", 0, "invalid number `12abc`"),
            ("3j", 0, "invalid number `3j`: complex numbers are not supported"),
            ("0x", 0, "invalid number `0x`"),
            ("0b2", 0, "invalid number `0b2`"),
            (
                "007",
                0,
                "invalid number `007`: leading zeros are not allowed (write `0o…` for octal)",
            ),
        ] {
            assert_eq!(error(src), ExprError::at(offset, message), "tokenizing {src:?}");
        }
    }

    #[test]
    fn operators_and_punctuation() {
        use Op::*;
        assert_eq!(
            kinds("+ - * / // % ** < <= > >= == != ( ) ,"),
            vec![
                Tok::Op(Plus),
                Tok::Op(Minus),
                Tok::Op(Star),
                Tok::Op(Slash),
                Tok::Op(SlashSlash),
                Tok::Op(Percent),
                Tok::Op(StarStar),
                Tok::Op(Lt),
                Tok::Op(Le),
                Tok::Op(Gt),
                Tok::Op(Ge),
                Tok::Op(EqEq),
                Tok::Op(NotEq),
                Tok::LParen,
                Tok::RParen,
                Tok::Comma,
            ]
        );
        // No spaces needed, and `**` wins over `*`.
        assert_eq!(
            kinds("2**-x"),
            vec![Tok::Num(2.0), Tok::Op(StarStar), Tok::Op(Minus), Tok::Name]
        );
    }

    #[test]
    fn tokens_remember_text_and_offset() {
        let tokens = tokenize(" >= 0.5 and\tservice_2").expect("valid input");
        let seen: Vec<(&str, usize)> = tokens.iter().map(|t| (t.text, t.offset)).collect();
        assert_eq!(seen, vec![(">=", 1), ("0.5", 4), ("and", 8), ("service_2", 12)]);
        assert!(tokenize("  \t ").expect("blank is no tokens").is_empty());
    }

    #[test]
    fn junk_gets_a_hint() {
        for (src, offset, message) in [
            ("=> 3", 0, "`=>` is not an operator; did you mean `>=`?"),
            ("1 =< 3", 2, "`=<` is not an operator; did you mean `<=`?"),
            ("x = 3", 2, "`=` is not an operator; did you mean `==`?"),
            ("x <> 3", 2, "`<>` is not an operator; did you mean `!=`?"),
            ("!x", 0, "`!` is not an operator; use `not` (or `!=`)"),
            ("a && b", 2, "`&` is not supported; for a logical and, write `and`"),
            ("a || b", 2, "`|` is not supported; for a logical or, write `or`"),
            ("x^2", 1, "`^` is not supported; for a power, write `**`"),
            ("== 'up'", 3, "strings are not supported"),
            ("x.real", 1, "unexpected `.`: attribute access is not supported"),
            ("x[0]", 1, "unexpected character `[`"),
            ("> 5 # comment", 4, "unexpected character `#`"),
            ("> µ", 2, "unexpected character `µ`"),
        ] {
            assert_eq!(error(src), ExprError::at(offset, message), "tokenizing {src:?}");
        }
    }

    #[test]
    fn too_many_tokens() {
        let long = "1+".repeat(MAX_TOKENS / 2) + "1";
        assert_eq!(error(&long).offset, MAX_TOKENS);
        let fits = "1+".repeat(MAX_TOKENS / 2 - 1) + "1";
        assert_eq!(tokenize(&fits).map(|t| t.len()), Ok(MAX_TOKENS - 1));
    }
}
