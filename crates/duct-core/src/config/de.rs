//! Typed options from configuration nodes, with errors that say where.
//!
//! Each source and output declares its options as a serde struct; this
//! module deserialises one from a [`Node`]. Scalars are read by the type
//! asked for, as Duct read them from PyYAML (`yes` is true, `5` can be a
//! number or a string). A failure names the file position and the key path;
//! keys the struct does not know become warnings with a "did you mean".

use std::cell::RefCell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::diag::{did_you_mean, Diagnostic};
use super::node::{Mark, Node, Style, Value};

/// A deserialisation failure: the message, the position of the value at
/// fault and the path of keys leading to it.
#[derive(Debug, Clone)]
pub struct DeError {
    pub message: String,
    pub mark: Option<Mark>,
    pub path: String,
}

impl DeError {
    fn at(mut self, node: &Node, path: &str) -> Self {
        if self.mark.is_none() {
            self.mark = Some(node.mark.clone());
            self.path = path.to_string();
        }
        self
    }

    /// The error as a diagnostic, its key path prefixed with `context`
    /// (`sources[2]`).
    pub fn into_diagnostic(self, context: &str) -> Diagnostic {
        let path = join_path(context, &self.path);
        let message = if path.is_empty() {
            self.message
        } else {
            format!("{path}: {}", self.message)
        };
        Diagnostic::error(self.mark, message)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            mark: None,
            path: String::new(),
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {}", describe(&unexp)))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing required option `{field}`"))
    }
}

fn describe(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str(s) => format!("`{s}`"),
        de::Unexpected::Unit => "nothing".into(),
        de::Unexpected::Map => "a map".into(),
        de::Unexpected::Seq => "a list".into(),
        other => other.to_string(),
    }
}

pub(crate) fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

/// What deserialisation needs besides the node: who owns the options (for
/// messages), keys handled elsewhere, and where warnings go.
pub struct Context<'a> {
    /// `duct.sources.linux.basic.CPU`, used in "unknown option" warnings.
    pub owner: &'a str,
    /// Path of the node being read, e.g. `sources[3]`.
    pub path: &'a str,
    /// Whether unknown keys of the top-level map are reported here (the
    /// planner checks source blocks itself, against the common options too).
    pub check_top: bool,
    /// Keys of the top-level map that are read by someone else and so are
    /// not unknown.
    pub also_known: &'a [&'a str],
    pub warnings: &'a RefCell<Vec<Diagnostic>>,
}

/// Deserialises `T` from `node`.
pub fn from_node<T: DeserializeOwned>(node: &Node, ctx: &Context<'_>) -> Result<T, DeError> {
    T::deserialize(NodeDeserializer {
        node,
        ctx,
        path: String::new(),
        top: true,
    })
}

/// Deserialises `T` from `node` with no unknown-key warnings (for values
/// whose keys are free-form).
pub fn from_node_quiet<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    let warnings = RefCell::new(Vec::new());
    let ctx = Context {
        owner: "",
        path: "",
        check_top: false,
        also_known: &[],
        warnings: &warnings,
    };
    T::deserialize(NodeDeserializer {
        node,
        ctx: &ctx,
        path: String::new(),
        top: true,
    })
}

/// The option names a struct declares, found by asking serde for them.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for &mut Probe {
        type Error = DeError;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DeError> {
            Err(de::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, DeError> {
            self.0 = Some(fields);
            Err(de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

struct NodeDeserializer<'a> {
    node: &'a Node,
    ctx: &'a Context<'a>,
    /// Key path from the root of this deserialisation, for messages.
    path: String,
    /// The options map itself (where `also_known` applies).
    top: bool,
}

impl<'a> NodeDeserializer<'a> {
    fn child(&self, node: &'a Node, key: &str) -> NodeDeserializer<'a> {
        NodeDeserializer {
            node,
            ctx: self.ctx,
            path: join_path(&self.path, key),
            top: false,
        }
    }

    fn scalar(&self) -> Option<&'a str> {
        match &self.node.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    fn mismatch(&self, expected: &str) -> DeError {
        let found = match &self.node.value {
            Value::Scalar(s, _) => format!("`{s}`"),
            _ => self.node.describe().to_string(),
        };
        de::Error::custom(format_args!("expected {expected}, found {found}"))
    }

    fn locate<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(self.node, &self.path))
    }

    fn parse_bool(&self) -> Result<bool, DeError> {
        match self.scalar().map(str::to_ascii_lowercase).as_deref() {
            Some("true" | "yes" | "on" | "y" | "1") => Ok(true),
            Some("false" | "no" | "off" | "n" | "0") => Ok(false),
            _ => Err(self.mismatch("true or false")),
        }
    }

    fn parse_i128(&self) -> Result<i128, DeError> {
        let text = self.scalar().ok_or_else(|| self.mismatch("a whole number"))?;
        let clean = text.replace('_', "");
        if let Ok(v) = clean.parse::<i128>() {
            return Ok(v);
        }
        if let Some(hex) = clean.strip_prefix("0x") {
            if let Ok(v) = i128::from_str_radix(hex, 16) {
                return Ok(v);
            }
        }
        // `port: 5555.0` meant 5555 (Duct called int() on it).
        match parse_float(&clean) {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e30 => Ok(f as i128),
            _ => Err(self.mismatch("a whole number")),
        }
    }

    fn parse_f64(&self) -> Result<f64, DeError> {
        let text = self.scalar().ok_or_else(|| self.mismatch("a number"))?;
        parse_float(&text.replace('_', "")).ok_or_else(|| self.mismatch("a number"))
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        // Rust accepts "inf" and "nan" spelled out; YAML does not.
        t if t.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => None,
        t => t.parse().ok(),
    }
}

macro_rules! deserialize_int {
    ($($method:ident $ty:ty => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let r = self.parse_i128().and_then(|v| {
                <$ty>::try_from(v).map_err(|_| {
                    de::Error::custom(format_args!(
                        "{v} is out of range ({} to {})", <$ty>::MIN, <$ty>::MAX
                    ))
                })
            });
            let r = r.and_then(|v| visitor.$visit(v));
            self.locate(r)
        }
    )*};
}

impl<'de, 'a> de::Deserializer<'de> for NodeDeserializer<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar(s, Style::Quoted) => visitor.visit_str(s),
            Value::Scalar(s, Style::Plain) => {
                if s == "true" || s == "True" {
                    visitor.visit_bool(true)
                } else if s == "false" || s == "False" {
                    visitor.visit_bool(false)
                } else if let Ok(i) = s.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Some(f) = parse_float(s) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(s)
                }
            }
            Value::Seq(_) => return self.deserialize_seq(visitor),
            Value::Map(_) => return self.deserialize_map(visitor),
        };
        self.locate(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.parse_bool().and_then(|b| visitor.visit_bool(b));
        self.locate(r)
    }

    deserialize_int! {
        deserialize_i8 i8 => visit_i8,
        deserialize_i16 i16 => visit_i16,
        deserialize_i32 i32 => visit_i32,
        deserialize_i64 i64 => visit_i64,
        deserialize_u8 u8 => visit_u8,
        deserialize_u16 u16 => visit_u16,
        deserialize_u32 u32 => visit_u32,
        deserialize_u64 u64 => visit_u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.parse_f64().and_then(|f| visitor.visit_f32(f as f32));
        self.locate(r)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.parse_f64().and_then(|f| visitor.visit_f64(f));
        self.locate(r)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match self.scalar() {
            Some(s) => visitor.visit_str(s),
            None => Err(self.mismatch("a string")),
        };
        self.locate(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            let r = visitor.visit_none();
            return self.locate(r);
        }
        let node = self.node;
        let path = self.path.clone();
        visitor.visit_some(self).map_err(|e: DeError| e.at(node, &path))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = if self.node.is_null() {
            visitor.visit_unit()
        } else {
            Err(self.mismatch("nothing"))
        };
        self.locate(r)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        let node = self.node;
        let path = self.path.clone();
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: DeError| e.at(node, &path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let Value::Seq(items) = &self.node.value else {
            let e = self.mismatch("a list");
            return self.locate(Err(e));
        };
        let access = NodeSeq {
            parent: &self,
            items: items.iter().enumerate(),
        };
        let r = visitor.visit_seq(access);
        self.locate(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let Value::Map(entries) = &self.node.value else {
            let e = self.mismatch("a map");
            return self.locate(Err(e));
        };
        let access = NodeMap {
            parent: &self,
            entries: entries.iter(),
            value: None,
            key: String::new(),
            fields: None,
        };
        let r = visitor.visit_map(access);
        self.locate(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Value::Map(entries) = &self.node.value else {
            // An absent block (`tls:` with nothing after it) reads as empty.
            if self.node.is_null() {
                let access = NodeMap {
                    parent: &self,
                    entries: [].iter(),
                    value: None,
                    key: String::new(),
                    fields: Some(fields),
                };
                let r = visitor.visit_map(access);
                return self.locate(r);
            }
            let e = self.mismatch("a map of options");
            return self.locate(Err(e));
        };
        let access = NodeMap {
            parent: &self,
            entries: entries.iter(),
            value: None,
            key: String::new(),
            fields: Some(fields),
        };
        let r = visitor.visit_map(access);
        self.locate(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Scalar(s, _) => {
                if variants.contains(&s.as_str()) {
                    visitor.visit_enum(s.as_str().into_deserializer())
                } else {
                    Err(de::Error::custom(format_args!(
                        "`{s}` is not one of {}{}",
                        variants.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "),
                        did_you_mean(s, variants.iter().copied())
                    )))
                }
            }
            Value::Map(entries) if entries.len() == 1 => visitor.visit_enum(NodeEnum {
                parent: &self,
                key: &entries[0].0,
                value: &entries[0].1,
            }),
            _ => Err(self.mismatch("one of the allowed names")),
        };
        self.locate(r)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.parse_i128().and_then(|v| visitor.visit_i128(v));
        self.locate(r)
    }
}

struct NodeSeq<'p, 'a> {
    parent: &'p NodeDeserializer<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> SeqAccess<'de> for NodeSeq<'_, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => seed.deserialize(self.parent.child(node, &format!("[{i}]"))).map(Some),
        }
    }
}

struct NodeMap<'p, 'a> {
    parent: &'p NodeDeserializer<'a>,
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    key: String,
    /// For structs: the known option names; other keys are skipped with a
    /// warning.
    fields: Option<&'static [&'static str]>,
}

impl<'de> MapAccess<'de> for NodeMap<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        for (key, value) in self.entries.by_ref() {
            let name = key.as_str().unwrap_or_default();
            if let Some(fields) = self.fields {
                if !fields.contains(&name) {
                    let ctx = self.parent.ctx;
                    let top = self.parent.top;
                    let known_elsewhere = top && (!ctx.check_top || ctx.also_known.contains(&name));
                    if !known_elsewhere {
                        let path = join_path(ctx.path, &join_path(&self.parent.path, name));
                        let owner = if ctx.owner.is_empty() {
                            String::new()
                        } else {
                            format!(" for {}", ctx.owner)
                        };
                        let candidates: Vec<&str> = if self.parent.top {
                            fields.iter().chain(ctx.also_known).copied().collect()
                        } else {
                            fields.to_vec()
                        };
                        ctx.warnings.borrow_mut().push(Diagnostic::warning(
                            key.mark.clone(),
                            format!(
                                "{path}: unknown option `{name}`{owner}{}",
                                did_you_mean(name, candidates)
                            ),
                        ));
                    }
                    continue;
                }
            }
            self.value = Some(value);
            self.key = name.to_string();
            let child = self.parent.child(key, "");
            return seed.deserialize(child).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(value) = self.value.take() else {
            return Err(de::Error::custom("value requested before key"));
        };
        seed.deserialize(self.parent.child(value, &self.key))
    }
}

struct NodeEnum<'p, 'a> {
    parent: &'p NodeDeserializer<'a>,
    key: &'a Node,
    value: &'a Node,
}

impl<'de, 'p, 'a> EnumAccess<'de> for NodeEnum<'p, 'a> {
    type Error = DeError;
    type Variant = NodeDeserializer<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), DeError> {
        let name = self.key.as_str().unwrap_or_default();
        let variant = seed.deserialize(self.parent.child(self.key, ""))?;
        Ok((variant, self.parent.child(self.value, name)))
    }
}

impl<'de> VariantAccess<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::parse;
    use serde::Deserialize;
    use std::path::Path;
    use std::sync::Arc;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default)]
    struct Opts {
        port: u16,
        ratio: f64,
        name: String,
        debug: bool,
        hosts: Vec<String>,
        tls: Option<Tls>,
    }

    impl Default for Opts {
        fn default() -> Self {
            Opts {
                port: 80,
                ratio: 1.0,
                name: "x".into(),
                debug: false,
                hosts: vec![],
                tls: None,
            }
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Tls {
        cert: String,
    }

    fn read(text: &str) -> (Result<Opts, DeError>, Vec<Diagnostic>) {
        let node = parse(text, Arc::from(Path::new("t.yml"))).unwrap();
        let warnings = RefCell::new(Vec::new());
        let ctx = Context {
            owner: "test.Source",
            path: "sources[0]",
            check_top: true,
            also_known: &["service", "source"],
            warnings: &warnings,
        };
        let r = from_node(&node, &ctx);
        (r, warnings.into_inner())
    }

    #[test]
    fn scalars_take_the_type_asked_for() {
        let (r, w) = read("service: s\nport: 8080\nratio: 2\nname: 123\ndebug: yes\nhosts: [a, b]\n");
        let o = r.unwrap();
        assert_eq!(o.port, 8080);
        assert_eq!(o.ratio, 2.0);
        assert_eq!(o.name, "123");
        assert!(o.debug);
        assert_eq!(o.hosts, vec!["a", "b"]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn type_errors_name_the_key_and_position() {
        let (r, _) = read("port: abc\n");
        let e = r.unwrap_err();
        assert_eq!(e.path, "port");
        let m = e.mark.clone().unwrap();
        assert_eq!((m.line, m.col), (1, 7));
        let d = e.into_diagnostic("sources[0]");
        assert_eq!(
            d.to_string(),
            "t.yml:1:7: sources[0].port: expected a whole number, found `abc`"
        );
    }

    #[test]
    fn nested_errors_keep_the_innermost_position() {
        let (r, _) = read("tls:\n  cert: [1]\n");
        let e = r.unwrap_err();
        assert_eq!(e.path, "tls.cert");
        assert_eq!(e.mark.unwrap().line, 2);
        let (r, _) = read("tls: {}\n");
        assert!(r.unwrap_err().message.contains("missing required option `cert`"));
    }

    #[test]
    fn out_of_range_integers_are_refused() {
        let (r, _) = read("port: 70000\n");
        assert!(r.unwrap_err().message.contains("out of range"));
    }

    #[test]
    fn unknown_options_warn_with_a_suggestion() {
        let (r, w) = read("service: s\nprot: 1\n");
        assert!(r.is_ok());
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "t.yml:2:1: warning: sources[0].prot: unknown option `prot` for test.Source (did you mean `port`?)"
        );
    }

    #[test]
    fn field_names_are_discovered() {
        assert_eq!(
            field_names::<Opts>(),
            &["port", "ratio", "name", "debug", "hosts", "tls"]
        );
    }
}
