//! The JSON the firmware reads and writes (LUKS2 metadata, the broker's messages, tokens,
//! evidence): a small value tree whose objects keep their keys sorted, a strict parser for
//! untrusted bytes and a writer whose compact output is byte for byte serde_json's.
//!
//! Written here rather than taken from serde_json because the firmware needs neither serde's
//! data model nor floating point: serde_json, serde and the `BTreeMap` behind its objects cost
//! the ROM about 40 KiB (measured: BENCHMARKS.md, ROM size), this module a fraction of it.
//! The host tests pin both directions to serde_json (`tests` below and the property tests),
//! so the two cannot drift apart.
//!
//! Differences from serde_json, on purpose: a number keeps the text it was parsed from (so
//! a rewrite of a LUKS2 header never changes a number it does not touch, and no float code
//! is linked), an object with a key twice is refused (serde_json keeps the last: a parser
//! disagreement an attacker could use against another reader), an error never quotes
//! the input (a master-secret file is JSON), and a number beyond f64's range (`1E310`) is
//! kept as its text like any other, where serde_json refuses it ("number out of range"): no
//! reader here takes it as a float, and as an integer it is none (`as_u64` gives None). A
//! host tool that hands such a document on to serde_json (`veil luks token` listings) fails
//! there with serde_json's own error.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Nesting depth the parser accepts (serde_json's limit too).
const MAX_DEPTH: usize = 128;

/// A JSON value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Map),
}

/// A JSON number: its text, checked against the grammar; integers are also read as such.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number {
    text: String,
}

impl Number {
    /// The value, if it is an integer in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.text.parse().ok()
    }

    /// The value, if it is an integer in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.text.parse().ok()
    }
}

/// A JSON object: keys kept sorted (byte order, as serde_json's default `BTreeMap`), so the
/// text it writes is canonical for digests and MACs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Map {
    entries: Vec<(String, Value)>,
}

impl Map {
    /// An empty object.
    pub fn new() -> Self {
        Map { entries: Vec::new() }
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value under `key`, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Set `key` to `value`; the value it replaces, if any.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        match self.find(&key) {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Remove `key`; its value, if it was present.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The entries in key order, values to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Value)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The values in key order, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Keep only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut Value) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// Overwrite every string (keys and values, recursively) with zeros, for maps that held
    /// secret material; the map is empty afterwards.
    pub fn wipe(&mut self) {
        for (k, v) in self.entries.iter_mut() {
            zeroize::Zeroize::zeroize(k);
            v.wipe();
        }
        self.entries.clear();
    }
}

impl FromIterator<(String, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut map = Map::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl IntoIterator for Map {
    type Item = (String, Value);
    type IntoIter = alloc::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a String, &'a Value);
    type IntoIter =
        core::iter::Map<core::slice::Iter<'a, (String, Value)>, fn(&'a (String, Value)) -> (&'a String, &'a Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

static NULL: Value = Value::Null;

impl Value {
    /// The member `key` of an object (None for other values).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|m| m.get(key))
    }

    /// The member `key` of an object, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.as_object_mut().and_then(|m| m.get_mut(key))
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is a number that is an integer in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The integer, if this is a number that is an integer in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The elements, if this is an array, to change.
    pub fn as_array_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The members, if this is an object, to change.
    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// True for an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    /// True for a string.
    pub fn is_string(&self) -> bool {
        matches!(self, Value::String(_))
    }

    /// Overwrite every string in it with zeros (for values that held secret material);
    /// the value is `null` afterwards.
    pub fn wipe(&mut self) {
        match self {
            Value::String(s) => zeroize::Zeroize::zeroize(s),
            Value::Array(a) => a.iter_mut().for_each(Value::wipe),
            Value::Object(m) => m.wipe(),
            _ => {}
        }
        *self = Value::Null;
    }
}

/// `value["key"]`: the member, or `null` when absent or when this is not an object.
impl core::ops::Index<&str> for Value {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NULL)
    }
}

/// `value[i]`: the element, or `null` when absent or when this is not an array.
impl core::ops::Index<usize> for Value {
    type Output = Value;
    fn index(&self, i: usize) -> &Value {
        self.as_array().and_then(|a| a.get(i)).unwrap_or(&NULL)
    }
}

/// `value["key"] = v`: a `null` becomes an object; a missing key is added.
///
/// # Panics
/// When the value is neither `null` nor an object (a programming error, as in serde_json).
impl core::ops::IndexMut<&str> for Value {
    fn index_mut(&mut self, key: &str) -> &mut Value {
        if self.is_null() {
            *self = Value::Object(Map::new());
        }
        let Value::Object(map) = self else { panic!("json: indexing a non-object with a key") };
        let i = match map.find(key) {
            Ok(i) => i,
            Err(i) => {
                map.entries.insert(i, (String::from(key), Value::Null));
                i
            }
        };
        &mut map.entries[i].1
    }
}

/// `value[i] = v`.
///
/// # Panics
/// When the value is not an array or `i` is past its end (a programming error).
impl core::ops::IndexMut<usize> for Value {
    fn index_mut(&mut self, i: usize) -> &mut Value {
        match self.as_array_mut().and_then(|a| a.get_mut(i)) {
            Some(v) => v,
            None => panic!("json: index {i} is not in an array"),
        }
    }
}

impl From<&str> for Value {
    #[inline(never)]
    fn from(s: &str) -> Self {
        Value::String(String::from(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::String(s.clone())
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Object(m)
    }
}
impl From<&Value> for Value {
    fn from(v: &Value) -> Self {
        v.clone()
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Value> + Clone> From<&[T]> for Value {
    fn from(v: &[T]) -> Self {
        Value::Array(v.iter().cloned().map(Into::into).collect())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
#[inline(never)]
fn unsigned(n: u64) -> Value {
    Value::Number(Number { text: alloc::format!("{n}") })
}
#[inline(never)]
fn signed(n: i64) -> Value {
    Value::Number(Number { text: alloc::format!("{n}") })
}
macro_rules! from_integer {
    ($via:ident: $($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                $via(n as _)
            }
        }
    )*};
}
from_integer!(unsigned: u8, u16, u32, u64, usize);
from_integer!(signed: i32, i64);
macro_rules! from_ref {
    ($($t:ty),*) => {$(
        impl From<&$t> for Value {
            fn from(v: &$t) -> Self {
                Value::from(*v)
            }
        }
    )*};
}
from_ref!(&str, bool, u8, u16, u32, u64, usize, i32, i64);
impl<T: Into<Value> + Clone> From<&Vec<T>> for Value {
    fn from(v: &Vec<T>) -> Self {
        Value::from(v.as_slice())
    }
}

impl PartialEq<str> for Value {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}
impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}
impl PartialEq<String> for Value {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == Some(other.as_str())
    }
}
impl PartialEq<u64> for Value {
    fn eq(&self, other: &u64) -> bool {
        self.as_u64() == Some(*other)
    }
}
impl PartialEq<bool> for Value {
    fn eq(&self, other: &bool) -> bool {
        self.as_bool() == Some(*other)
    }
}

/// Host tools put agent values into their own serde output.
#[cfg(feature = "std")]
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => serializer.serialize_u64(u),
                (None, Some(i)) => serializer.serialize_i64(i),
                _ => serializer.serialize_f64(n.text.parse().map_err(serde::ser::Error::custom)?),
            },
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(a) => {
                let mut seq = serializer.serialize_seq(Some(a.len()))?;
                a.iter().try_for_each(|v| seq.serialize_element(v))?;
                seq.end()
            }
            Value::Object(m) => {
                let mut map = serializer.serialize_map(Some(m.len()))?;
                m.iter().try_for_each(|(k, v)| map.serialize_entry(k, v))?;
                map.end()
            }
        }
    }
}

/// The host tools' serde_json values, through their text (exact both ways: serde_json writes
/// nothing this parser refuses, and reads everything this writer writes).
#[cfg(feature = "std")]
impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        from_str(&v.to_string()).expect("serde_json's text parses")
    }
}
#[cfg(feature = "std")]
impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        Value::from(&v)
    }
}
#[cfg(feature = "std")]
impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        serde_json::from_str(&to_string(v)).expect("agent::json's text parses")
    }
}
#[cfg(feature = "std")]
impl From<Value> for serde_json::Value {
    fn from(v: Value) -> Self {
        serde_json::Value::from(&v)
    }
}

/// One entry of a [`json!`] object: out of line, so that each expansion is a call rather
/// than an inlined key allocation and sorted insert (measured: 6 KiB of the ROM).
#[doc(hidden)]
#[inline(never)]
pub fn __entry(map: &mut Map, key: &str, value: Value) {
    map.insert(String::from(key), value);
}

/// An empty array for [`json!`] to push to (a call, so that clippy's `vec_init_then_push`
/// does not fire on every expansion).
#[doc(hidden)]
pub fn __array() -> Vec<Value> {
    Vec::new()
}

/// Build a [`Value`] from JSON-like syntax: `json!({"a": [1, null, x.len()], "b": {}})`.
/// Object keys are string literals; any other value is an expression converted with
/// `Value::from`.
#[macro_export]
macro_rules! json {
    (null) => { $crate::json::Value::Null };
    ([ $($tt:tt)* ]) => {{
        #[allow(unused_mut)]
        let mut array = $crate::json::__array();
        $crate::json!(@array array $($tt)*);
        $crate::json::Value::Array(array)
    }};
    ({ $($tt:tt)* }) => {{
        #[allow(unused_mut)]
        let mut map = $crate::json::Map::new();
        $crate::json!(@object map $($tt)*);
        $crate::json::Value::Object(map)
    }};
    (@array $a:ident) => {};
    (@array $a:ident null $(, $($rest:tt)*)?) => {
        $a.push($crate::json::Value::Null); $crate::json!(@array $a $($($rest)*)?);
    };
    (@array $a:ident [ $($v:tt)* ] $(, $($rest:tt)*)?) => {
        $a.push($crate::json!([ $($v)* ])); $crate::json!(@array $a $($($rest)*)?);
    };
    (@array $a:ident { $($v:tt)* } $(, $($rest:tt)*)?) => {
        $a.push($crate::json!({ $($v)* })); $crate::json!(@array $a $($($rest)*)?);
    };
    (@array $a:ident $v:expr $(, $($rest:tt)*)?) => {
        $a.push($crate::json::Value::from($v)); $crate::json!(@array $a $($($rest)*)?);
    };
    (@object $m:ident) => {};
    (@object $m:ident $k:literal : null $(, $($rest:tt)*)?) => {
        $crate::json::__entry(&mut $m, $k, $crate::json::Value::Null);
        $crate::json!(@object $m $($($rest)*)?);
    };
    (@object $m:ident $k:literal : [ $($v:tt)* ] $(, $($rest:tt)*)?) => {
        $crate::json::__entry(&mut $m, $k, $crate::json!([ $($v)* ]));
        $crate::json!(@object $m $($($rest)*)?);
    };
    (@object $m:ident $k:literal : { $($v:tt)* } $(, $($rest:tt)*)?) => {
        $crate::json::__entry(&mut $m, $k, $crate::json!({ $($v)* }));
        $crate::json!(@object $m $($($rest)*)?);
    };
    (@object $m:ident $k:literal : $v:expr $(, $($rest:tt)*)?) => {
        $crate::json::__entry(&mut $m, $k, $crate::json::Value::from($v));
        $crate::json!(@object $m $($($rest)*)?);
    };
    ($v:expr) => { $crate::json::Value::from($v) };
}

/// The compact text, as serde_json writes it.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_string(self))
    }
}

/// The compact JSON text of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    to_string(value).into_bytes()
}

/// The compact JSON text of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n.text),
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

/// A string with serde_json's escapes: `"`, `\`, the five short control escapes and
/// `\u00xx` (lower-case hex) for the other control characters; everything else as is.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why a text is not the JSON accepted here. The message never quotes the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    what: &'static str,
    line: usize,
    column: usize,
}

impl Error {
    /// What is wrong.
    pub fn what(&self) -> &'static str {
        self.what
    }
    /// 1-based line of the error.
    pub fn line(&self) -> usize {
        self.line
    }
    /// 1-based column (in bytes) of the error.
    pub fn column(&self) -> usize {
        self.column
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at line {} column {}", self.what, self.line, self.column)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Parse one JSON value; only whitespace may follow it.
pub fn from_slice(text: &[u8]) -> Result<Value, Error> {
    parse(text, true).map(|(v, _)| v)
}

/// Parse the JSON value at the start of `text` (after whitespace); the value and the offset
/// just past it. What follows is the caller's.
pub fn from_slice_prefix(text: &[u8]) -> Result<(Value, usize), Error> {
    parse(text, false)
}

fn parse(text: &[u8], whole: bool) -> Result<(Value, usize), Error> {
    let mut p = Parser { text, at: 0 };
    let v = p.value(0).and_then(|v| {
        let end = p.at;
        p.skip_space();
        if whole && p.at < text.len() { Err("trailing characters") } else { Ok((v, end)) }
    });
    v.map_err(|what| {
        let before = &text[..p.at.min(text.len())];
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Error { what, line: 1 + before.iter().filter(|&&b| b == b'\n').count(), column: 1 + p.at - line_start }
    })
}

/// Parse one JSON value from text.
pub fn from_str(text: &str) -> Result<Value, Error> {
    from_slice(text.as_bytes())
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

type Parsed<T> = Result<T, &'static str>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Parsed<Value> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err("expected a value")
        }
    }

    fn value(&mut self, depth: usize) -> Parsed<Value> {
        self.skip_space();
        match self.peek() {
            None => Err("unexpected end of input"),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(open @ (b'[' | b'{')) => {
                if depth >= MAX_DEPTH {
                    return Err("nested too deeply");
                }
                self.at += 1;
                let close = open + 2; // `]` and `}` follow `[` and `{` by two in ASCII
                let mut array = Vec::new();
                let mut map = Map::new();
                self.skip_space();
                if self.peek() == Some(close) {
                    self.at += 1;
                } else {
                    loop {
                        self.skip_space();
                        if open == b'[' {
                            array.push(self.value(depth + 1)?);
                        } else {
                            if self.peek() != Some(b'"') {
                                return Err("expected a string key");
                            }
                            let key = self.string()?;
                            self.skip_space();
                            if self.peek() != Some(b':') {
                                return Err("expected `:`");
                            }
                            self.at += 1;
                            let value = self.value(depth + 1)?;
                            match map.find(&key) {
                                Ok(_) => return Err("duplicate key in an object"),
                                Err(i) => map.entries.insert(i, (key, value)),
                            }
                        }
                        self.skip_space();
                        match self.peek() {
                            Some(b',') => self.at += 1,
                            Some(c) if c == close => {
                                self.at += 1;
                                break;
                            }
                            None => return Err("unexpected end of input"),
                            Some(_) => return Err("expected `,` or a closing bracket"),
                        }
                    }
                }
                Ok(if open == b'[' { Value::Array(array) } else { Value::Object(map) })
            }
            Some(_) => Err("expected a value"),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// RFC 8259's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Parsed<Value> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        match self.digits() {
            0 => return Err("invalid number"),
            n if n > 1 && self.text[int_start] == b'0' => return Err("invalid number (leading zero)"),
            _ => {}
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        // The slice is ASCII digits and signs by construction.
        let text = core::str::from_utf8(&self.text[start..self.at]).map_err(|_| "invalid number")?;
        Ok(Value::Number(Number { text: String::from(text) }))
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let digits = self.text.get(self.at..self.at + 4).ok_or("unexpected end of input")?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + (d as char).to_digit(16).ok_or("invalid \\u escape")?;
        }
        self.at += 4;
        Ok(n)
    }

    /// A string; the result is allocated once at its final size (no reallocation leaves a
    /// partial copy of a secret behind in freed memory).
    fn string(&mut self) -> Parsed<String> {
        self.at += 1; // the opening quote
        let start = self.at;
        // First pass: find the end, check the bytes, and see whether there are escapes.
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err("unexpected end of input in a string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 2;
                }
                Some(0..0x20) => return Err("control character in a string"),
                Some(_) => self.at += 1,
            }
        }
        let raw = self.text.get(start..self.at).ok_or("unexpected end of input in a string")?;
        let raw = core::str::from_utf8(raw).map_err(|_| "invalid UTF-8 in a string")?;
        let end = self.at + 1;
        if !escaped {
            self.at = end;
            return Ok(String::from(raw));
        }
        // Second pass: unescape into a buffer of the raw length (never shorter than the result).
        let mut out = String::with_capacity(raw.len());
        self.at = start;
        while self.at < end - 1 {
            let rest = &raw[self.at - start..];
            let Some(backslash) = rest.find('\\') else {
                out.push_str(rest);
                break;
            };
            out.push_str(&rest[..backslash]);
            self.at += backslash + 1;
            let c = self.text[self.at];
            self.at += 1;
            match c {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let mut code = self.hex4()?;
                    if (0xD800..0xDC00).contains(&code) {
                        if self.text.get(self.at..self.at + 2) != Some(b"\\u") {
                            return Err("lone surrogate in a \\u escape");
                        }
                        self.at += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&low) {
                            return Err("lone surrogate in a \\u escape");
                        }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    }
                    out.push(char::from_u32(code).ok_or("lone surrogate in a \\u escape")?);
                }
                _ => return Err("invalid escape in a string"),
            }
        }
        self.at = end;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    /// Our value as serde_json's, built without this module's writer.
    fn to_serde(v: &Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::from_str(&n.text).unwrap(),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(to_serde).collect()),
            Value::Object(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), to_serde(v))).collect()),
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\/a\u{e9}\u{1F600}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The writer is serde_json's compact writer, byte for byte (sorted keys, escapes).
        #[test]
        fn writes_what_serde_json_writes(v in arb_value()) {
            prop_assert_eq!(to_string(&v), serde_json::to_string(&to_serde(&v)).unwrap());
        }

        /// What serde_json writes (compact or pretty) parses back to the same value.
        #[test]
        fn reads_what_serde_json_writes(v in arb_value()) {
            let s = to_serde(&v);
            prop_assert_eq!(&from_slice(serde_json::to_string(&s).unwrap().as_bytes()).unwrap(), &v);
            prop_assert_eq!(&from_slice(serde_json::to_string_pretty(&s).unwrap().as_bytes()).unwrap(), &v);
        }

        /// On any bytes the parser accepts exactly what serde_json accepts (objects with a
        /// repeated key aside, which only this parser refuses), with the same value.
        #[test]
        fn accepts_what_serde_json_accepts(text in prop_oneof![
            any::<Vec<u8>>(),
            "[ \\[\\]{}\"\\\\:,0-9.eE+\\-ntrufalsu\\x00-\\x1f\u{e9}]{0,24}".prop_map(String::into_bytes),
        ]) {
            let ours = from_slice(&text);
            match serde_json::from_slice::<serde_json::Value>(&text) {
                Ok(theirs) => match ours {
                    Ok(v) => prop_assert_eq!(to_serde(&v), theirs),
                    Err(e) => prop_assert_eq!(e.what(), "duplicate key in an object"),
                },
                // The one difference on purpose besides repeated keys: a number beyond f64's
                // range is kept as text (module documentation). serde_json stopped at that
                // number; its syntax-only pass (IgnoredAny converts no number) judges the rest.
                Err(e) if e.to_string().starts_with("number out of range") => {
                    let syntax = serde_json::from_slice::<serde::de::IgnoredAny>(&text).is_ok()
                        && core::str::from_utf8(&text).is_ok();
                    match (&ours, syntax) {
                        (Ok(_), true) | (Err(_), false) => {}
                        (Err(e), true) => prop_assert_eq!(e.what(), "duplicate key in an object"),
                        (Ok(_), false) => prop_assert!(false, "accepted {:?}", String::from_utf8_lossy(&text)),
                    }
                }
                Err(_) => prop_assert!(ours.is_err(), "accepted {:?}", String::from_utf8_lossy(&text)),
            }
        }
    }

    /// serde_json refuses a number beyond f64's range; this parser keeps its text, which is no
    /// integer (the property test above allows exactly this difference).
    #[test]
    fn a_number_beyond_f64_is_kept_as_text() {
        // After such a number, the rest of the document is still judged by the grammar.
        for bad in ["[1e999,]", "[1e999}", "{\"a\":1E310,}"] {
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(), "{bad}");
            assert!(from_str(bad).is_err(), "{bad}");
        }
        for text in ["1E310", "-1e400", "[2e308]"] {
            let e = serde_json::from_str::<serde_json::Value>(text).unwrap_err().to_string();
            assert!(e.starts_with("number out of range"), "{e}");
            let v = from_str(text).unwrap();
            let n = if text.starts_with('[') { v[0].clone() } else { v };
            assert_eq!((n.as_u64(), n.as_i64()), (None, None), "{text}");
            assert_eq!(to_string(&from_str(text).unwrap()), text);
        }
    }

    #[test]
    fn strict_where_the_grammar_is() {
        for bad in [
            &b""[..],
            b"01",
            b"-",
            b"1.",
            b".5",
            b"1e",
            b"+1",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"a\nb\"",
            b"nul",
            b"[1] x",
            b"{\"a\":1,\"a\":2}",
            b"\"\xff\"",
        ] {
            assert!(from_slice(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(from_str(&deep).unwrap_err().what(), "nested too deeply");
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(from_str(&ok).is_ok());
    }

    #[test]
    fn errors_say_where_but_never_quote() {
        let e = from_str("{\n  \"key\": \"c2VjcmV0\",\n  \"salt\": c2VjcmV0\n}").unwrap_err();
        assert_eq!((e.line(), e.column()), (3, 11));
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn numbers_keep_their_text() {
        let v = from_str(r#"{"big":18446744073709551615,"neg":-5,"f":1.50e+3,"z":-0}"#).unwrap();
        assert_eq!(v["big"].as_u64(), Some(u64::MAX));
        assert_eq!(v["neg"].as_i64(), Some(-5));
        assert_eq!(v["neg"].as_u64(), None);
        assert_eq!(v["f"].as_u64(), None);
        assert_eq!(to_string(&v), r#"{"big":18446744073709551615,"f":1.50e+3,"neg":-5,"z":-0}"#);
    }

    #[test]
    fn macro_and_index() {
        let n = 7u32;
        let mut v = json!({"b": [1, null, {"c": n + 1}], "a": "x", "e": {}, "o": None::<u32>});
        v["d"] = json!(true);
        v["a"] = json!([]);
        assert_eq!(to_string(&v), r#"{"a":[],"b":[1,null,{"c":8}],"d":true,"e":{},"o":null}"#);
        assert_eq!(v["b"][2]["c"].as_u64(), Some(8));
        assert!(v["missing"]["deeper"].is_null());
        let mut w = Value::Null;
        w["k"] = json!("v");
        assert_eq!(w.to_string(), r#"{"k":"v"}"#);
    }

    #[test]
    fn wipe_clears_every_string() {
        let mut v = json!({"key": "secret", "list": ["secret"]});
        v.wipe();
        assert!(v.is_null());
    }
}
