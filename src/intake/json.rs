//! The one JSON reader for every body the gateway accepts (referrals, events, staff API
//! requests). Stricter than `serde_json::from_slice`:
//!
//! - a member name that appears twice in one object is refused (serde_json keeps the
//!   last copy, while another parser may keep the first: what the gateway checks and
//!   what a recipient reads would differ);
//! - a `\u0000` anywhere in a string or member name is refused (it is never valid in a
//!   referral, and PostgreSQL cannot store it);
//! - nesting deeper than serde_json's limit (128), numbers out of range, invalid UTF-8,
//!   lone surrogates and trailing characters are refused as serde_json refuses them.
//!
//! Refusals carry a JSON Pointer and a fixed description, never the caller's text.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    /// Syntax errors: serde_json's category and position (never the caller's text).
    #[error("{reason} at line {line} column {column}")]
    Syntax {
        reason: &'static str,
        line: usize,
        column: usize,
    },
    #[error("member name appears more than once in its object at {pointer}")]
    DuplicateMember { pointer: String },
    #[error("string holds a NUL character (\\u0000) at {pointer}")]
    NulCharacter { pointer: String },
}

impl JsonError {
    /// The JSON Pointer of the offending member, for problem documents.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            Self::DuplicateMember { pointer } | Self::NulCharacter { pointer } => Some(pointer),
            _ => None,
        }
    }

    /// A fixed code for the problem document's `keyword` and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotUtf8 => "not-utf8",
            Self::Syntax { .. } => "syntax",
            Self::DuplicateMember { .. } => "duplicate-member",
            Self::NulCharacter { .. } => "nul-character",
        }
    }
}

/// Parses `bytes` as one JSON document under the rules above.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    // serde_json checks the UTF-8 of every string it reads, and any other non-ASCII byte
    // is a syntax error: a document it reads is UTF-8, so only a refused one is checked.
    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result = Node {
        found: &found,
        at: &Step::Root,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match result {
        Ok(value) => Ok(value),
        Err(_) if std::str::from_utf8(bytes).is_err() => Err(JsonError::NotUtf8),
        Err(error) => Err(found.into_inner().unwrap_or_else(|| syntax(&error))),
    }
}

fn syntax(error: &serde_json::Error) -> JsonError {
    use serde_json::error::Category;
    let reason = match error.classify() {
        Category::Eof => "the body ends too early",
        Category::Io => "the body could not be read",
        Category::Syntax | Category::Data => {
            // serde_json's message without its position, when it is one of its fixed
            // texts; anything else gets a generic description.
            let text = error.to_string();
            KNOWN_REASONS
                .iter()
                .find(|r| text.starts_with(**r))
                .copied()
                .unwrap_or("invalid JSON")
        }
    };
    JsonError::Syntax {
        reason,
        line: error.line(),
        column: error.column(),
    }
}

/// serde_json's own syntax messages (none of them quotes the input).
const KNOWN_REASONS: [&str; 20] = [
    "EOF while parsing a list",
    "EOF while parsing an object",
    "EOF while parsing a string",
    "EOF while parsing a value",
    "expected `:`",
    "expected `,` or `]`",
    "expected `,` or `}`",
    "expected ident",
    "expected value",
    "expected `\"`",
    "invalid escape",
    "invalid number",
    "number out of range",
    "invalid unicode code point",
    "control character (\\u0000-\\u001F) found while parsing a string",
    "key must be a string",
    "lone leading surrogate in hex escape",
    "trailing comma",
    "trailing characters",
    "recursion limit exceeded",
];

/// One value being read, and where it sits in the document.
struct Node<'a> {
    found: &'a RefCell<Option<JsonError>>,
    at: &'a Step<'a>,
}

/// Where a value sits: a path kept on the stack, turned into a JSON Pointer only when a
/// value is refused.
enum Step<'a> {
    Root,
    Member(&'a str, &'a Step<'a>),
    Item(usize, &'a Step<'a>),
}

impl Step<'_> {
    fn pointer(&self) -> String {
        match self {
            Self::Root => String::new(),
            Self::Member(name, parent) => {
                format!("{}/{}", parent.pointer(), escape_pointer_token(name))
            }
            Self::Item(index, parent) => format!("{}/{index}", parent.pointer()),
        }
    }
}

impl Node<'_> {
    fn refuse<E: de::Error>(&self, error: JsonError) -> E {
        let message = error.to_string();
        *self.found.borrow_mut() = Some(error);
        E::custom(message)
    }

    fn string<E: de::Error>(&self, text: String) -> Result<Value, E> {
        if text.contains('\0') {
            return Err(self.refuse(JsonError::NulCharacter {
                pointer: self.at.pointer(),
            }));
        }
        Ok(Value::String(text))
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.string(v)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let at = Step::Item(items.len(), self.at);
            let item = Node {
                found: self.found,
                at: &at,
            };
            match seq.next_element_seed(item)? {
                Some(value) => items.push(value),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let at = Step::Member(&name, self.at);
            if name.contains('\0') {
                return Err(self.refuse(JsonError::NulCharacter {
                    pointer: at.pointer(),
                }));
            }
            if members.contains_key(&name) {
                return Err(self.refuse(JsonError::DuplicateMember {
                    pointer: at.pointer(),
                }));
            }
            let value = map.next_value_seed(Node {
                found: self.found,
                at: &at,
            })?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// RFC 6901: `~` becomes `~0` and `/` becomes `~1` in a pointer's tokens.
pub fn escape_pointer_token(token: &str) -> String {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1")
    } else {
        token.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_documents_as_serde_json_does() {
        let text = r#"{"a": [1, 2.5, -3, true, null, "x\u00e9"], "b": {"c": {}}}"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn refuses_duplicate_members_at_any_depth_with_their_pointer() {
        let cases = [
            (r#"{"a": 1, "a": 2}"#, "/a"),
            (r#"{"person": {"gp": 1}, "person": {}}"#, "/person"),
            (
                r#"{"needs": [{"type": "x", "type": "y"}]}"#,
                "/needs/0/type",
            ),
            (r#"{"a/b": {"m~n": 1, "m~n": 1}}"#, "/a~1b/m~0n"),
        ];
        for (text, pointer) in cases {
            assert_eq!(
                parse(text.as_bytes()),
                Err(JsonError::DuplicateMember {
                    pointer: pointer.to_owned()
                }),
                "{text}"
            );
        }
        // The same name in different objects is fine.
        assert!(parse(br#"{"a": {"x": 1}, "b": {"x": 1}}"#).is_ok());
    }

    #[test]
    fn refuses_nul_in_strings_and_names() {
        assert_eq!(
            parse(br#"{"a": ["ok", "b\u0000"]}"#),
            Err(JsonError::NulCharacter {
                pointer: "/a/1".into()
            })
        );
        assert_eq!(
            parse(br#"{"k\u0000": 1}"#),
            Err(JsonError::NulCharacter {
                pointer: "/k\u{0}".into()
            })
        );
    }

    #[test]
    fn syntax_errors_never_quote_the_input() {
        for text in [
            "{\"secret name\": tru}",
            "{\"a\": 1} {\"b\": 2}",
            "\u{feff}{}",
            "{\"a\": \"\\ud800\"}",
            "1e400",
            "{\"a\": 1,}",
            "",
        ] {
            let error = parse(text.as_bytes()).unwrap_err();
            assert!(matches!(error, JsonError::Syntax { .. }), "{text}: {error}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
        assert_eq!(parse(b"{\"a\": \"\xff\"}"), Err(JsonError::NotUtf8));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "[".repeat(5000) + &"]".repeat(5000);
        assert!(matches!(
            parse(text.as_bytes()),
            Err(JsonError::Syntax {
                reason: "recursion limit exceeded",
                ..
            })
        ));
    }
}
