//! What the fuzz targets (`fuzz/`, docs/fuzzing.md) share: a fuzzer gives
//! one byte string, and several parsers want a choice, two inputs or text.
//! The entry points themselves sit in a `fuzzing` module beside the
//! parsers they drive (`linux::fuzzing`, `services::fuzzing`), so that the
//! parsers stay private to their family; each feeds its bytes to a parser
//! the way the source does, so that what is fuzzed is what runs.

use std::borrow::Cow;

/// The first byte, which chooses among a family's parsers, and the rest.
pub fn choose(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(&which, rest)| (which, rest))
}

/// Two inputs in one: the bytes before and after the first NUL.
pub fn two_parts(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// Bytes as the sources read a file, a command's output or a reply: not
/// UTF-8 is replaced, not refused.
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}
