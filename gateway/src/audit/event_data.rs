//! An event's `event_data`, held as the JSON text the store writes and the chain hashes (docs/audit.md,
//! "The event's representation").
//!
//! The payload builders ([`super::payload`]) write it once, on the request path where the event is
//! built, as canonical JSON ([`super::chain::canonical_json`]'s form: object keys sorted bytewise at
//! every level, no insignificant whitespace) with [`ObjectBuilder`]. The writer thread then embeds the
//! text as is: no tree to walk for the queue's byte budget, none to canonicalise, none to free there.
//! Consumers that need a tree (the DataStorage wire form, tests) parse it with [`EventData::to_value`],
//! off the hot path.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::chain::{canonical_json, write_string};

/// Canonical JSON text of an event's `event_data` (normally an object).
#[derive(Clone)]
pub struct EventData {
    json: String,
    /// The integer member built with [`ObjectBuilder::int_slot`] and where its digits sit in `json`,
    /// so [`EventData::set_int`] rewrites it without re-parsing the text.
    slot: Option<Slot>,
}

#[derive(Clone, Debug)]
struct Slot {
    key: &'static str,
    at: Range<usize>,
}

impl EventData {
    /// `{}`.
    pub fn empty() -> Self {
        Self {
            json: "{}".to_owned(),
            slot: None,
        }
    }

    /// The canonical text of `v`.
    pub fn from_value(v: &Value) -> Self {
        Self {
            json: canonical_json(v),
            slot: None,
        }
    }

    /// The canonical JSON text: what the store writes and the chain hashes.
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// Bytes of the text.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Never true for built data (`{}` is two bytes); here for completeness.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// The text parsed into a tree, for consumers that need one (off the hot path). The text is always
    /// valid JSON (it is only ever written by this module); `Null` should it ever not be.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// Sets the member `key` of the object to `value` (the text becomes an object if it was not one).
    /// Re-parses and re-writes the whole text: for rare paths and tests, not the request path.
    pub fn insert(&mut self, key: &str, value: Value) {
        self.extend([(key, value)]);
    }

    /// [`EventData::insert`] of several members, with one re-parse for all of them.
    pub fn extend<'k>(&mut self, members: impl IntoIterator<Item = (&'k str, Value)>) {
        let mut tree = match self.to_value() {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        for (key, value) in members {
            tree.insert(key.to_owned(), value);
        }
        *self = Self::from_value(&Value::Object(tree));
    }

    /// Sets the integer member `key`: in place when it is the member the builder wrote with
    /// [`ObjectBuilder::int_slot`] (the request path's occurrence count), else as [`EventData::insert`].
    pub fn set_int(&mut self, key: &str, value: i64) {
        match &mut self.slot {
            Some(slot) if slot.key == key => {
                let mut digits = String::with_capacity(20);
                push_int(&mut digits, value);
                self.json.replace_range(slot.at.clone(), &digits);
                slot.at = slot.at.start..slot.at.start + digits.len();
            }
            _ => self.insert(key, Value::from(value)),
        }
    }
}

/// `value` in decimal, as `Display` writes it, without the formatting machinery.
fn push_int(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    push_uint(out, value.unsigned_abs());
}

/// `value` in decimal, as `Display` writes it.
pub(crate) fn push_uint(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

impl Default for EventData {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Value> for EventData {
    fn from(v: Value) -> Self {
        Self::from_value(&v)
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl PartialEq<Value> for EventData {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl PartialEq<EventData> for Value {
    fn eq(&self, other: &EventData) -> bool {
        *self == other.to_value()
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

impl fmt::Display for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

/// Serialised as the JSON it holds (the spill file's and the rejected file's form are unchanged: an
/// object, not a string).
impl Serialize for EventData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.json.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Read back through a tree and written canonically, whatever whitespace or key order the input had.
impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|v| Self::from_value(&v))
    }
}

/// Writes a JSON object in canonical form directly, without a tree: each member is written once into
/// one buffer, and [`ObjectBuilder::finish`] emits the members sorted by key (bytewise). Writing a key
/// twice keeps the last value, as inserting into a map would.
///
/// Members written in ascending key order (the request path's builders write them so) are already
/// the canonical text, keys included: `finish` only closes it. Otherwise it copies the values out in
/// key order.
#[derive(Debug)]
pub struct ObjectBuilder {
    /// `{"k1":v1,"k2":v2…`: every member, key and value, in the order written.
    buf: String,
    members: Vec<Member>,
    slot: Option<&'static str>,
}

#[derive(Debug)]
struct Member {
    key: &'static str,
    /// The value's bytes in `buf`.
    at: Range<usize>,
}

impl Default for ObjectBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl ObjectBuilder {
    /// A builder whose members are expected to take about `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = String::with_capacity(bytes + 2);
        buf.push('{');
        Self {
            buf,
            members: Vec::with_capacity(24),
            slot: None,
        }
    }

    fn member(&mut self, key: &'static str, write: impl FnOnce(&mut String)) -> &mut Self {
        if !self.members.is_empty() {
            self.buf.push(',');
        }
        write_string(&mut self.buf, key);
        self.buf.push(':');
        let start = self.buf.len();
        write(&mut self.buf);
        self.members.push(Member {
            key,
            at: start..self.buf.len(),
        });
        self
    }

    /// A string member.
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.member(key, |b| write_string(b, value))
    }

    /// A string member made of `parts` joined (`namespace/name`), without joining them first.
    pub fn str_joined(&mut self, key: &'static str, parts: &[&str]) -> &mut Self {
        self.member(key, |b| {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            let mut joined = String::with_capacity(len);
            for p in parts {
                joined.push_str(p);
            }
            write_string(b, &joined)
        })
    }

    /// A string member, `null` when absent.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        self.member(key, |b| match value {
            Some(v) => write_string(b, v),
            None => b.push_str("null"),
        })
    }

    /// An integer member.
    pub fn int(&mut self, key: &'static str, value: i64) -> &mut Self {
        self.member(key, |b| push_int(b, value))
    }

    /// An integer member that [`EventData::set_int`] can rewrite in place later (one per object).
    pub fn int_slot(&mut self, key: &'static str, value: i64) -> &mut Self {
        self.slot = Some(key);
        self.int(key, value)
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.member(key, |b| b.push_str(if value { "true" } else { "false" }))
    }

    /// An object of strings (a `BTreeMap` iterates in bytewise key order: already canonical).
    pub fn string_map(&mut self, key: &'static str, map: &BTreeMap<String, String>) -> &mut Self {
        self.member(key, |b| {
            b.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    b.push(',');
                }
                write_string(b, k);
                b.push(':');
                write_string(b, v);
            }
            b.push('}');
        })
    }

    /// The JSON object in `text`, written canonically without building a tree
    /// ([`write_canonical`]); no member when `text` is not a JSON object.
    pub fn json_object(&mut self, key: &'static str, text: &str) -> &mut Self {
        if !text.trim_start().starts_with('{') {
            return self;
        }
        let Ok(node) = serde_json::from_str::<Node<'_>>(text) else {
            return self;
        };
        self.member(key, |b| node.write(b))
    }

    /// A nested object.
    pub fn object(&mut self, key: &'static str, nested: ObjectBuilder) -> &mut Self {
        let nested = nested.finish();
        self.member(key, |b| b.push_str(nested.as_str()))
    }

    /// Whether the members so far were written in ascending key order, each key once (then
    /// [`ObjectBuilder::finish`] only closes the text).
    pub fn in_key_order(&self) -> bool {
        self.members
            .windows(2)
            .all(|w| w[0].key.as_bytes() < w[1].key.as_bytes())
    }

    /// The object's canonical text.
    pub fn finish(mut self) -> EventData {
        if self.in_key_order() {
            self.buf.push('}');
            let slot = self.slot.and_then(|key| {
                let m = self.members.iter().find(|m| m.key == key)?;
                Some(Slot {
                    key,
                    at: m.at.clone(),
                })
            });
            return EventData {
                json: self.buf,
                slot,
            };
        }
        // Stable: of two members with one key, the later stays later (and is the one kept).
        self.members
            .sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        let mut json = String::with_capacity(self.buf.len() + 1);
        let mut slot = None;
        json.push('{');
        let mut first = true;
        for (i, m) in self.members.iter().enumerate() {
            if self
                .members
                .get(i + 1)
                .is_some_and(|next| next.key == m.key)
            {
                continue;
            }
            if !first {
                json.push(',');
            }
            first = false;
            write_string(&mut json, m.key);
            json.push(':');
            let start = json.len();
            json.push_str(&self.buf[m.at.clone()]);
            if self.slot == Some(m.key) {
                slot = Some(Slot {
                    key: m.key,
                    at: start..json.len(),
                });
            }
        }
        json.push('}');
        EventData { json, slot }
    }
}

/// Writes the JSON text `text` in canonical form — [`canonical_json`] of its parsed tree —
/// from one parse into a borrowed [`Node`] tree (strings without escapes borrowed from `text`, members
/// in a `Vec`), instead of serde_json's owned `Value`. Returns `false` (writing nothing) if `text` is
/// not JSON.
///
/// On the request path this replaced parsing each alert's original payload into a `Value` to write it
/// sorted (docs/benchmarks.md, "One edge middleware").
pub fn write_canonical(out: &mut String, text: &str) -> bool {
    match serde_json::from_str::<Node<'_>>(text) {
        Ok(node) => {
            node.write(out);
            true
        }
        Err(_) => false,
    }
}

/// A parsed JSON value that borrows what it can from the text. Only ever deserialized from JSON text
/// by serde_json, which hands out a borrowed string only when it had no escape ([`Text::Plain`]).
enum Node<'a> {
    Null,
    Bool(bool),
    /// An integer, written as `Value` writes it (its decimal digits).
    Int(i64),
    UInt(u64),
    /// Any other number, built as `Value` builds its numbers, so it prints the same.
    Number(serde_json::Number),
    Str(Text<'a>),
    Array(Vec<Node<'a>>),
    /// In the text's order; sorted (and de-duplicated, the last kept, as a map does) when written.
    Object(Vec<(Text<'a>, Node<'a>)>),
}

/// A string of the text: borrowed when it had no escape, so it holds no `"`, `\` or control
/// character (JSON admits none of them raw) and is written between quotes as is; else unescaped, and
/// written escaped.
enum Text<'a> {
    Plain(&'a str),
    Unescaped(String),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Plain(s) => s,
            Text::Unescaped(s) => s,
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Text::Plain(s) => {
                out.reserve(s.len() + 2);
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
            Text::Unescaped(s) => write_string(out, s),
        }
    }
}

impl Node<'_> {
    fn write(self, out: &mut String) {
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Node::Int(n) => push_int(out, n),
            Node::UInt(n) => push_uint(out, n),
            Node::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Node::Str(s) => s.write(out),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Object(mut members) => {
                let sorted = members
                    .windows(2)
                    .all(|w| w[0].0.as_str().as_bytes() < w[1].0.as_str().as_bytes());
                if !sorted {
                    // Stable: of equal keys the last stays last, and only the last is written.
                    members.sort_by(|a, b| a.0.as_str().as_bytes().cmp(b.0.as_str().as_bytes()));
                }
                out.push('{');
                let mut first = true;
                let mut members = members.into_iter().peekable();
                while let Some((k, v)) = members.next() {
                    if members
                        .peek()
                        .is_some_and(|(next, _)| next.as_str() == k.as_str())
                    {
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    k.write(out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// A key, borrowed unless it has escapes.
struct Key<'a>(Text<'a>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(NodeVisitor)
            .and_then(|n| match n {
                Node::Str(s) => Ok(Key(s)),
                _ => Err(serde::de::Error::custom("a key must be a string")),
            })
    }
}

struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::UInt(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Int(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node<'de>, E> {
        serde_json::Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Text::Plain(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Text::Unescaped(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Text::Unescaped(v)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some((Key(k), v)) = map.next_entry::<Key<'de>, Node<'de>>()? {
            members.push((k, v));
        }
        Ok(Node::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn built() -> ObjectBuilder {
        let mut b = ObjectBuilder::with_capacity(64);
        b.str("signal_name", "Høj hukommelse – «prod» ✓ \u{1}\"\\/")
            .int_slot("occurrence_count", 7)
            .opt_str("rr_uid", None)
            .bool("retry_possible", false)
            .json_object(
                "original_payload",
                r#"{"z": [1.5, -0.0, 1e300, 12345678901234567890], "a": {"é": null, "e": "x\ty"}}"#,
            )
            .int("attempt", -3);
        let mut labels = BTreeMap::new();
        labels.insert("zone".to_owned(), "eu-west-1".to_owned());
        labels.insert("Alertname".to_owned(), "Ünïcode".to_owned());
        labels.insert("é".to_owned(), "\u{7f}".to_owned());
        b.string_map("signal_labels", &labels);
        let mut nested = ObjectBuilder::with_capacity(16);
        nested.str("message", "x").str("code", "ERR_X");
        b.object("error_details", nested);
        b
    }

    fn as_tree() -> Value {
        json!({
            "signal_name": "Høj hukommelse – «prod» ✓ \u{1}\"\\/",
            "occurrence_count": 7,
            "rr_uid": null,
            "retry_possible": false,
            "original_payload": {"z": [1.5, -0.0, 1e300, 12345678901234567890u64], "a": {"é": null, "e": "x\ty"}},
            "attempt": -3,
            "signal_labels": {"zone": "eu-west-1", "Alertname": "Ünïcode", "é": "\u{7f}"},
            "error_details": {"message": "x", "code": "ERR_X"},
        })
    }

    #[test]
    fn builds_the_canonical_text_of_the_same_tree() {
        let data = built().finish();
        assert_eq!(data.as_str(), canonical_json(&as_tree()));
        assert_eq!(data.to_value(), as_tree());
        assert_eq!(data, EventData::from_value(&as_tree()));
    }

    #[test]
    fn the_slot_is_rewritten_in_place_and_other_keys_by_reparsing() {
        let mut data = built().finish();
        let mut tree = as_tree();
        for n in [8, 1_000_000, 0, -12] {
            data.set_int("occurrence_count", n);
            tree["occurrence_count"] = json!(n);
            assert_eq!(data.as_str(), canonical_json(&tree));
        }
        data.set_int("attempt", 99);
        tree["attempt"] = json!(99);
        assert_eq!(data.as_str(), canonical_json(&tree));
        data.insert("added", json!({"b": 1, "a": 2}));
        tree["added"] = json!({"b": 1, "a": 2});
        assert_eq!(data.as_str(), canonical_json(&tree));
        data.extend([("z", json!(null)), ("added", json!([1])), ("b", json!("x"))]);
        tree["z"] = json!(null);
        tree["added"] = json!([1]);
        tree["b"] = json!("x");
        assert_eq!(data.as_str(), canonical_json(&tree));
    }

    #[test]
    fn json_text_is_written_as_its_parsed_trees_canonical_form() {
        let cases = [
            r#"{"labels":{"severity":"critical","alertname":"KubePodCrashLooping","namespace":"prod"},"annotations":{"summary":"Pod is crash looping"},"startsAt":"2026-11-30T05:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus/graph?g0.expr=x&g0.tab=1","fingerprint":"a1b2c3d4e5f60718","status":"firing"}"#,
            r#" { "b" : [ 1 , 2.50 , -0.0 , 1e300 , 12345678901234567890 , -9223372036854775808 , true , null ] , "a" : { } , "c" : [ ] } "#,
            r#"{"k\u00e9y":"v","ke\"y":"\u0001\t\"\\/","é":"ü","z":{"y":{"x":[{"b":1,"a":2}]}}}"#,
            r#"{"dup":1,"dup":{"b":2,"a":1},"A":"\ud83d\ude00","line":"a\nb"}"#,
            r#"{"n":1.0,"m":0.1,"e":1E-7,"big":1.7976931348623157e308,"neg":-12}"#,
        ];
        for text in cases {
            let tree: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            assert!(tree.is_object(), "{text}");
            let mut out = String::new();
            assert!(write_canonical(&mut out, text), "{text}");
            assert_eq!(out, canonical_json(&tree), "{text}");
            let mut b = ObjectBuilder::default();
            b.json_object("original_payload", text).str("a", "b");
            let mut expected = serde_json::Map::new();
            expected.insert("original_payload".into(), tree);
            expected.insert("a".into(), json!("b"));
            assert_eq!(
                b.finish().as_str(),
                canonical_json(&Value::Object(expected))
            );
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = "(\\PC|[\u{0}-\u{1f}\"\\\\/\u{7f}\u{80}\u{2028}😀])*";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text, inner), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Written canonically straight from the text — compact or pretty, keys in any order — is
        /// the parsed tree's canonical form.
        #[test]
        fn written_canonically_is_the_trees_canonical_form(v in json_value(), pretty: bool) {
            let text = if pretty {
                serde_json::to_string_pretty(&v)
            } else {
                serde_json::to_string(&v)
            }
            .unwrap_or_default();
            let mut out = String::new();
            proptest::prop_assert!(write_canonical(&mut out, &text));
            proptest::prop_assert_eq!(out, canonical_json(&v));
        }
    }

    #[test]
    fn only_a_json_object_becomes_a_member() {
        for text in [
            "", "[1]", "\"x\"", "1", "null", "{", "{\"a\":}", "{} x", "not json",
        ] {
            let mut b = ObjectBuilder::default();
            b.json_object("original_payload", text).int("n", 1);
            assert_eq!(b.finish().as_str(), r#"{"n":1}"#, "{text:?}");
        }
    }

    #[test]
    fn a_key_written_twice_keeps_the_last_value() {
        let mut b = ObjectBuilder::default();
        b.str("reason", "invalid")
            .int("n", 1)
            .str("reason", "resolved");
        assert_eq!(b.finish().as_str(), r#"{"n":1,"reason":"resolved"}"#);
    }

    #[test]
    fn serialises_as_the_object_it_holds() {
        let data = built().finish();
        let text = serde_json::to_string(&data).unwrap_or_default();
        assert_eq!(text, data.as_str());
        assert_eq!(serde_json::to_value(&data).ok(), Some(as_tree()));
        // Read back canonically whatever the input's layout.
        let back: EventData =
            serde_json::from_str(r#"{ "b" : 1, "a" : [ 2 ] }"#).unwrap_or_default();
        assert_eq!(back.as_str(), r#"{"a":[2],"b":1}"#);
    }
}
