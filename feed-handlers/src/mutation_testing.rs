//! Shared pieces of the property tests that change bytes of venue frames: the edits,
//! and the checks that our two readers (the schema-ordered fast path and the general
//! scanner) read every frame the way a general JSON parser would.

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::de::DeserializeOwned;

/// One to two byte edits, favouring the bytes that shape JSON.
pub fn structural_edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    let byte = prop_oneof![
        1 => Just(b']'), 1 => Just(b'['), 1 => Just(b'"'), 1 => Just(b','), 4 => any::<u8>()
    ];
    proptest::collection::vec((0usize..400, byte), 1..3)
}

/// Up to two byte edits for the inside of level arrays: digits, the bytes that shape
/// JSON, whitespace, `letter`, anything else. Never a backslash: serde decodes escapes
/// and the scanner does not, so escapes cannot be compared.
pub fn level_edits(letter: u8) -> impl Strategy<Value = Vec<(usize, u8)>> {
    let byte = prop_oneof![
        4 => b'0'..=b'9', 1 => Just(b'.'), 1 => Just(b'"'), 1 => Just(b','), 1 => Just(b'['),
        1 => Just(b']'), 1 => Just(b' '), 1 => Just(letter), 1 => any::<u8>().prop_filter("no escapes", |&b| b != b'\\')
    ];
    proptest::collection::vec((0usize..200, byte), 0..3)
}

/// `bytes` with the edits applied (positions wrap around).
pub fn edited(bytes: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(at, byte) in edits {
        let at = at % out.len();
        out[at] = byte;
    }
    out
}

/// When the fast path reads `frame`, the general path reads it the same, except where
/// the fast path located level arrays by their `]]` instead of matching brackets: then
/// those levels fail their walk (`walks` false) and the general path fails too.
pub fn paths_agree<T: PartialEq + Debug, E: Debug>(
    frame: &[u8],
    fast: Option<T>,
    general: Result<T, E>,
    walks: impl Fn(&T) -> bool,
) -> Result<(), TestCaseError> {
    let Some(event) = fast else { return Ok(()) };
    let text = String::from_utf8_lossy(frame);
    if general.as_ref().ok() != Some(&event) {
        prop_assert!(!walks(&event), "fast path misread {text}");
        prop_assert!(
            general.as_ref().map_or(true, |g| !walks(g)),
            "general path reads {text}"
        );
    }
    Ok(())
}

/// What serde_json plus the slice decimal parser read from an array of `N`-string
/// arrays, each item converted by `item`; `None` when either rejects anything.
pub fn serde_reference<const N: usize, T>(span: &[u8], item: impl Fn(&[String; N]) -> Option<T>) -> Option<Vec<T>>
where
    [String; N]: DeserializeOwned,
{
    serde_json::from_slice::<Vec<[String; N]>>(span)
        .ok()?
        .iter()
        .map(item)
        .collect()
}
