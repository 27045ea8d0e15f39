//! Kite ticker text frames: JSON messages between the binary ticks (order postbacks,
//! errors, broadcast messages), `{"type":"order","data":{...}}`.

use crate::json_scan::{for_each_field, JsonError, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KiteText<'a> {
    /// An order update; `data` is the raw order object for the order engine.
    Order { data: &'a [u8] },
    /// An error message from the ticker (e.g. bad subscription).
    Error { message: &'a [u8] },
    /// A broadcast message.
    Message { message: &'a [u8] },
    /// A type this handler does not know (counted, ignored).
    Other { kind: &'a [u8] },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KiteTextError {
    #[error("invalid JSON: {0}")]
    Json(#[from] JsonError),
    #[error("missing \"type\"")]
    MissingType,
    #[error("missing or malformed \"data\"")]
    MissingData,
}

fn text(v: Option<Value<'_>>) -> Option<&[u8]> {
    match v? {
        Value::Str(s) | Value::Object(s) => Some(s),
        _ => None,
    }
}

pub fn parse_text(frame: &[u8]) -> Result<KiteText<'_>, KiteTextError> {
    let mut kind = None;
    let mut data = None;
    for_each_field(frame, |k, v| {
        match k {
            b"type" => kind = v.as_str(),
            b"data" => data = Some(v),
            _ => {}
        }
        Ok(())
    })?;
    let kind = kind.ok_or(KiteTextError::MissingType)?;
    Ok(match kind {
        b"order" => match data {
            Some(Value::Object(o)) => KiteText::Order { data: o },
            _ => return Err(KiteTextError::MissingData),
        },
        b"error" => KiteText::Error {
            message: text(data).ok_or(KiteTextError::MissingData)?,
        },
        b"message" => KiteText::Message {
            message: text(data).ok_or(KiteTextError::MissingData)?,
        },
        other => KiteText::Other { kind: other },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postbacks_and_errors() {
        let order =
            br#"{"type":"order","data":{"order_id":"151220000000000","status":"COMPLETE","tradingsymbol":"INFY"}}"#;
        assert!(matches!(parse_text(order), Ok(KiteText::Order { data }) if data.starts_with(b"{\"order_id\"")));
        assert_eq!(
            parse_text(br#"{"type":"error","data":"Invalid token"}"#),
            Ok(KiteText::Error {
                message: b"Invalid token"
            })
        );
        assert_eq!(
            parse_text(br#"{"type":"message","data":"hi"}"#),
            Ok(KiteText::Message { message: b"hi" })
        );
        assert_eq!(
            parse_text(br#"{"type":"new","data":1}"#),
            Ok(KiteText::Other { kind: b"new" })
        );
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(parse_text(br#"{"data":"x"}"#), Err(KiteTextError::MissingType));
        assert_eq!(
            parse_text(br#"{"type":"order","data":"x"}"#),
            Err(KiteTextError::MissingData)
        );
        assert!(matches!(parse_text(br#"{"type":"order""#), Err(KiteTextError::Json(_))));
        assert!(matches!(parse_text(b""), Err(KiteTextError::Json(_))));
    }
}
