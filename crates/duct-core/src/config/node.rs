//! YAML parsed into a tree that remembers where every value came from.
//!
//! Configuration is merged from several files, expanded from blueprints and
//! only then given types, so positions have to survive all of that: every
//! [`Node`] carries a [`Mark`] (file, line, column) and error messages are
//! built from it. Anchors, aliases and `<<` merge keys are resolved here, as
//! PyYAML did for Duct.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use yaml_rust2::parser::{Event as YamlEvent, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a configuration file (line and column count from 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mark {
    pub file: Arc<Path>,
    pub line: usize,
    pub col: usize,
}

impl Mark {
    pub fn new(file: Arc<Path>, line: usize, col: usize) -> Self {
        Mark { file, line, col }
    }

    /// The same place, `n` columns further right.
    pub fn shifted(&self, n: usize) -> Mark {
        Mark {
            col: self.col + n,
            ..self.clone()
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// How a scalar was written: plain scalars are typed by what is asked of
/// them (`5` can be a number or a string); quoted ones are always strings
/// when a value of any type is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Scalar(String, Style),
    Seq(Vec<Node>),
    /// Keys in file order; keys are scalars (YAML allows more, Duct's
    /// configuration never needs it).
    Map(Vec<(Node, Node)>),
}

/// A YAML value and where it was written.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

impl Node {
    pub fn new(value: Value, mark: Mark) -> Self {
        Node { value, mark }
    }

    pub fn null(mark: Mark) -> Self {
        Node::new(Value::Null, mark)
    }

    pub fn string(text: impl Into<String>, mark: Mark) -> Self {
        Node::new(Value::Scalar(text.into(), Style::Quoted), mark)
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The key node (for its position) and value under `key`.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// Sets `key` in a map node, replacing an existing value in place so the
    /// key keeps its position in the file order.
    pub fn set(&mut self, key: Node, value: Node) {
        if let Value::Map(entries) = &mut self.value {
            match entries.iter_mut().find(|(k, _)| k.as_str() == key.as_str()) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
    }

    /// Removes `key` from a map node, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        if let Value::Map(entries) = &mut self.value {
            let at = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
            return Some(entries.remove(at).1);
        }
        None
    }

    /// What kind of value this is, for messages ("expected a map, found a list").
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing (null)",
            Value::Scalar(..) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// A position-free rendering used to tell whether two blocks are the
    /// same (configuration reload restarts only what changed).
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        match &self.value {
            Value::Null => out.push('~'),
            Value::Scalar(s, style) => {
                out.push(if *style == Style::Plain { 'p' } else { 'q' });
                out.push_str(&format!("{s:?}"));
            }
            Value::Seq(items) => {
                out.push('[');
                for item in items {
                    item.write_canonical(out);
                    out.push(',');
                }
                out.push(']');
            }
            Value::Map(entries) => {
                out.push('{');
                for (k, v) in entries {
                    k.write_canonical(out);
                    out.push(':');
                    v.write_canonical(out);
                    out.push(',');
                }
                out.push('}');
            }
        }
    }
}

/// The deepest nesting of lists and maps a configuration may have. Duct's
/// own files nest five or six levels; the tree is walked recursively
/// (interpolation, typing, dropping), so a file nested thousands of levels
/// deep would otherwise overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// The most nodes (scalars, lists, maps) that aliases may copy into one
/// file. Aliases are expanded into copies, and nine aliases of nine aliases
/// … ("billion laughs") turn 500 bytes into 10^9 nodes; 100,000 copies are
/// about 10 MB and far more than sharing defaults between a few thousand
/// sources needs.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// A YAML syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

/// Parses the first document of `text` (read from `file`). An empty
/// document is `Value::Null`.
pub fn parse(text: &str, file: Arc<Path>) -> Result<Node, SyntaxError> {
    let mut builder = TreeBuilder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        root: None,
        error: None,
    };
    // Events are pulled here rather than with `Parser::load`, which recurses
    // once per level of nesting: a deeply nested file would overflow the
    // stack before the builder could refuse it.
    let mut parser = Parser::new_from_str(text);
    while builder.error.is_none() {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                let m = e.marker();
                return Err(SyntaxError {
                    mark: Mark::new(file, m.line(), m.col() + 1),
                    message: e.info().to_string(),
                });
            }
        };
        // Only the first document is read.
        if matches!(event, YamlEvent::DocumentEnd | YamlEvent::StreamEnd) {
            break;
        }
        builder.on_event(event, marker);
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or_else(|| Node::null(Mark::new(file, 1, 1))))
}

/// Receives the parser's events and assembles nodes.
struct TreeBuilder {
    file: Arc<Path>,
    /// Open collections: the node being filled, its anchor id, and for maps
    /// a key waiting for its value.
    stack: Vec<(Node, usize, Option<Node>)>,
    /// Anchored nodes by id, for aliases, with their number of nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes copied by aliases so far (at most [`MAX_ALIAS_NODES`]).
    alias_nodes: usize,
    root: Option<Node>,
    /// The first semantic error (unknown alias, bad merge key); the parser's
    /// callback cannot return one.
    error: Option<SyntaxError>,
}

impl TreeBuilder {
    fn mark(&self, m: Marker) -> Mark {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Mark::new(self.file.clone(), m.line(), m.col() + 1)
    }

    fn fail(&mut self, mark: Mark, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { mark, message });
        }
    }

    /// Hands a finished node to its parent collection (or makes it the root).
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = node_count(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some((parent, _, pending_key)) => match &mut parent.value {
                Value::Seq(items) => items.push(node),
                Value::Map(_) => match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => {
                        if let Err(err) = insert_map_entry(parent, key, node) {
                            self.fail(err.mark, err.message);
                        }
                    }
                },
                _ => {}
            },
        }
    }
}

/// Adds `key: value` to a map node, resolving `<<` merge keys: the merged
/// maps only supply keys the map does not set itself.
fn insert_map_entry(map: &mut Node, key: Node, value: Node) -> Result<(), SyntaxError> {
    let is_merge = matches!(&key.value, Value::Scalar(k, Style::Plain) if k == "<<");
    let Value::Map(entries) = &mut map.value else {
        return Ok(());
    };
    if !is_merge {
        // A key set again (or set after a `<<` merge supplied it) takes the
        // last value, as PyYAML did.
        match entries.iter_mut().find(|(k, _)| k.as_str() == key.as_str()) {
            Some(slot) => *slot = (key, value),
            None => entries.push((key, value)),
        }
        return Ok(());
    }
    let sources: Vec<Node> = match value.value {
        Value::Map(_) => vec![value],
        Value::Seq(items) => items,
        _ => {
            return Err(SyntaxError {
                mark: value.mark,
                message: "a `<<` merge key needs a map or a list of maps".into(),
            })
        }
    };
    for source in sources {
        let Value::Map(merged) = source.value else {
            return Err(SyntaxError {
                mark: source.mark,
                message: "a `<<` merge key needs a map or a list of maps".into(),
            });
        };
        for (k, v) in merged {
            if !entries.iter().any(|(have, _)| have.as_str() == k.as_str()) {
                entries.push((k, v));
            }
        }
    }
    Ok(())
}

impl TreeBuilder {
    fn on_event(&mut self, ev: YamlEvent, marker: Marker) {
        if self.error.is_some() {
            // The document is refused: build nothing more of it.
            return;
        }
        let mark = self.mark(marker);
        match ev {
            YamlEvent::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain && is_null_word(&text) {
                    Value::Null
                } else if style == TScalarStyle::Plain {
                    Value::Scalar(text, Style::Plain)
                } else {
                    Value::Scalar(text, Style::Quoted)
                };
                self.push(Node::new(value, mark), anchor);
            }
            YamlEvent::SequenceStart(..) | YamlEvent::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.fail(
                    mark,
                    format!("lists and maps are nested more than {MAX_DEPTH} levels deep"),
                );
            }
            YamlEvent::SequenceStart(anchor, _) => {
                self.stack.push((Node::new(Value::Seq(Vec::new()), mark), anchor, None));
            }
            YamlEvent::MappingStart(anchor, _) => {
                self.stack.push((Node::new(Value::Map(Vec::new()), mark), anchor, None));
            }
            YamlEvent::SequenceEnd | YamlEvent::MappingEnd => {
                if let Some((node, anchor, _)) = self.stack.pop() {
                    self.push(node, anchor);
                }
            }
            YamlEvent::Alias(id) => match self.anchors.get(&id) {
                Some((_, size)) if self.alias_nodes + size > MAX_ALIAS_NODES => {
                    self.fail(
                        mark,
                        format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} copied values; \
                             write the repeated parts out or use fewer, smaller anchors"
                        ),
                    );
                }
                Some((node, size)) => {
                    let node = node.clone();
                    self.alias_nodes += size;
                    self.push(node, 0);
                }
                None => self.fail(mark, "alias to an unknown anchor".into()),
            },
            _ => {}
        }
    }
}

/// The number of nodes in a tree (the node itself included). Recursion is
/// bounded by [`MAX_DEPTH`].
fn node_count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Null | Value::Scalar(..) => 0,
        Value::Seq(items) => items.iter().map(node_count).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| node_count(k) + node_count(v)).sum(),
    }
}

fn is_null_word(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse(text, Arc::from(Path::new("t.yml"))).expect("valid yaml")
    }

    #[test]
    fn marks_point_at_values() {
        let n = doc("interval: 5\nsources:\n  - service: cpu\n    source: x\n");
        let interval = n.get("interval").unwrap();
        assert_eq!((interval.mark.line, interval.mark.col), (1, 11));
        let src = &n.get("sources").unwrap().as_seq().unwrap()[0];
        let service = src.get("service").unwrap();
        assert_eq!(service.as_str(), Some("cpu"));
        assert_eq!((service.mark.line, service.mark.col), (3, 14));
    }

    #[test]
    fn quoted_and_null_scalars_are_told_apart() {
        let n = doc("a: ~\nb:\nc: 'null'\nd: 5\n");
        assert!(n.get("a").unwrap().is_null());
        assert!(n.get("b").unwrap().is_null());
        assert!(matches!(n.get("c").unwrap().value, Value::Scalar(_, Style::Quoted)));
        assert!(matches!(n.get("d").unwrap().value, Value::Scalar(_, Style::Plain)));
    }

    #[test]
    fn aliases_and_merge_keys_resolve() {
        let n = doc("base: &b {interval: 5, ttl: 10}\nsrc:\n  <<: *b\n  ttl: 20\n  copy: *b\n");
        let src = n.get("src").unwrap();
        assert_eq!(src.get("ttl").unwrap().as_str(), Some("20"));
        assert_eq!(src.get("interval").unwrap().as_str(), Some("5"));
        assert_eq!(src.get("copy").unwrap().get("ttl").unwrap().as_str(), Some("10"));
        assert!(src.get("<<").is_none());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n", Arc::from(Path::new("t.yml"))).unwrap_err();
        assert_eq!(err.mark.file.to_str(), Some("t.yml"));
        assert!(err.mark.line >= 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn empty_document_is_null() {
        assert!(doc("").is_null());
        assert!(doc("# only a comment\n").is_null());
    }

    #[test]
    fn canonical_form_ignores_positions() {
        let a = doc("x: {a: 1, b: [2, 'c']}\n");
        let b = doc("\n\nx:\n  a: 1\n  b:\n    - 2\n    - 'c'\n");
        assert_eq!(a.get("x").unwrap().canonical(), b.get("x").unwrap().canonical());
        let c = doc("x: {a: 1, b: [2, c]}\n");
        assert_ne!(a.get("x").unwrap().canonical(), c.get("x").unwrap().canonical());
    }

    #[test]
    fn alias_expansion_is_capped_with_a_located_error() {
        // Nine aliases of nine aliases of nine values: 9^9 copies.
        let mut text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_string();
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse(&text, Arc::from(Path::new("t.yml"))).unwrap_err();
        assert!(
            err.message.contains("aliases expand to more than 100000"),
            "{}",
            err.message
        );
        // a5 holds 9^5 + … nodes: its own aliases to a4 already pass the cap.
        assert_eq!(err.mark.line, 6, "{:?}", err.mark);
        // Sharing defaults between many blocks stays well within it.
        let mut text = "d: &d {interval: 5, ttl: 10, tags: [a, b]}\nsources:\n".to_string();
        for i in 0..2000 {
            text.push_str(&format!("  - {{<<: *d, service: s{i}}}\n"));
        }
        assert_eq!(doc(&text).get("sources").unwrap().as_seq().unwrap().len(), 2000);
    }

    #[test]
    fn nesting_is_capped_with_a_located_error() {
        let deep: String = (0..200).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        let err = parse(&deep, Arc::from(Path::new("t.yml"))).unwrap_err();
        assert!(err.message.contains("nested more than 64 levels"), "{}", err.message);
        assert_eq!(err.mark.line, 65, "{:?}", err.mark);
        // Far deeper than the cap: refused, not a stack overflow.
        let deeper: String = (0..5000).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(parse(&deeper, Arc::from(Path::new("t.yml"))).is_err());
        let ok: String = (0..40).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        assert!(parse(&ok, Arc::from(Path::new("t.yml"))).is_ok());
    }
}
