//! From files to one configuration tree: environment interpolation,
//! `include` merging, toolbox/blueprint expansion and the legacy Riemann
//! output, in that order (docs/configuration.md, *Includes* and
//! *Blueprints*).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diag::{did_you_mean, Diagnostic, Diagnostics};
use super::node::{self, Mark, Node, Style, Value};

/// The default `max_sources`: far more than one agent polls in practice
/// (a few thousand network checks), and few enough that planning them
/// takes seconds and well under a gigabyte.
pub const DEFAULT_MAX_SOURCES: usize = 100_000;

/// One `sources:` or `outputs:` entry after merging and expansion.
#[derive(Debug, Clone)]
pub struct Block {
    pub node: Node,
    /// Where the block came from, for messages: `sources[3]`, or
    /// `blueprint[0] toolbox web source[1] {host: a}`.
    pub context: String,
}

/// The merged top-level map, with its sources and outputs taken out.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: Node,
    pub sources: Vec<Block>,
    pub outputs: Vec<Block>,
}

/// Reads and merges a configuration file. Problems that do not stop loading
/// (a missing include directory) are pushed to `diags` as warnings.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>, diags: &mut Diagnostics) -> Option<Tree> {
    let file: Arc<Path> = Arc::from(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::error(
                None,
                format!("cannot read configuration file {}: {e}", path.display()),
            ));
            return None;
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_text(&text, file, &base, env, diags)
}

/// Like [`load_file`] for text already in memory (the embedded default);
/// relative include paths resolve against `base`.
pub fn load_text(
    text: &str,
    file: Arc<Path>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Option<Tree> {
    let mut root = parse_document(text, file.clone(), env, diags)?;
    if root.is_null() {
        diags.push(Diagnostic::warning(
            Mark::new(file.clone(), 1, 1),
            "the configuration is empty",
        ));
        root = Node::new(Value::Map(Vec::new()), Mark::new(file, 1, 1));
    }
    if root.as_map().is_none() {
        diags.push(Diagnostic::error(
            root.mark.clone(),
            format!("the configuration must be a map of keys, found {}", root.describe()),
        ));
        return None;
    }
    merge_includes(&mut root, base, env, diags);
    let mut sources = take_blocks(&mut root, "sources", diags);
    // A `max_sources` of the wrong type is reported when the globals are
    // typed; the default applies meanwhile.
    let max_sources = root
        .get("max_sources")
        .and_then(Node::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_MAX_SOURCES);
    if sources.len() > max_sources {
        let at = sources[max_sources].node.mark.clone();
        diags.push(Diagnostic::error(
            at,
            format!(
                "sources: {} sources, more than max_sources ({max_sources}); raise max_sources if this is meant",
                sources.len()
            ),
        ));
    }
    let room = max_sources.saturating_sub(sources.len());
    sources.extend(expand_blueprints(&mut root, max_sources, room, diags));
    let mut outputs = take_blocks(&mut root, "outputs", diags);
    if outputs.is_empty() {
        outputs.extend(legacy_output(&root, diags));
    }
    Some(Tree { root, sources, outputs })
}

/// Parses one file and interpolates `${VAR}` in its values.
fn parse_document(
    text: &str,
    file: Arc<Path>,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Option<Node> {
    match node::parse(text, file) {
        Ok(mut root) => {
            interpolate(&mut root, env, diags);
            Some(root)
        }
        Err(e) => {
            diags.push(Diagnostic::error(e.mark, format!("invalid YAML: {}", e.message)));
            None
        }
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every scalar value (not in
/// keys); `$${` stands for a literal `${`.
fn interpolate(node: &mut Node, env: &dyn Fn(&str) -> Option<String>, diags: &mut Diagnostics) {
    match &mut node.value {
        Value::Scalar(text, style) if text.contains('$') => {
            let quoted = usize::from(*style == Style::Quoted);
            match substitute(text, env) {
                Ok(new) => *text = new,
                Err((offset, message)) => diags.push(Diagnostic::error(node.mark.shifted(offset + quoted), message)),
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(|n| interpolate(n, env, diags)),
        Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| interpolate(v, env, diags)),
        _ => {}
    }
}

/// How deeply `${A:-${B:-…}}` defaults may nest.
pub const MAX_DEFAULT_NESTING: usize = 8;

/// The text with variables replaced, or the byte offset and reason of the
/// first bad reference. A default may itself hold references
/// (`${X:-${Y:-z}}`), expanded only when the default is used, as a shell
/// does.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, (usize, String)> {
    substitute_within(text, 0, 0, env)
}

/// [`substitute`] on a part of a value that starts at byte `base` of it,
/// `depth` defaults deep.
fn substitute_within(
    text: &str,
    base: usize,
    depth: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            offset += at + 3;
            continue;
        }
        if !tail.starts_with("${") {
            out.push('$');
            rest = &tail[1..];
            offset += at + 1;
            continue;
        }
        let start = offset + at;
        let Some(close) = closing_brace(tail) else {
            return Err((
                base + start,
                "unterminated `${` (write `$${` for a literal `${`)".into(),
            ));
        };
        let inner = &tail[2..close];
        let (name, default) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some((&inner[i + 2..], base + start + 2 + i + 2))),
            None => (inner, None),
        };
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err((
                base + start,
                format!("`${{{inner}}}` is not a valid variable reference"),
            ));
        }
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some((d, _))) if !d.contains('$') => out.push_str(d),
            (None, Some(_)) if depth + 1 >= MAX_DEFAULT_NESTING => {
                return Err((
                    base + start,
                    format!("defaults are nested more than {MAX_DEFAULT_NESTING} deep"),
                ))
            }
            (None, Some((d, at))) => out.push_str(&substitute_within(d, at, depth + 1, env)?),
            (None, None) => {
                return Err((
                    base + start,
                    format!("environment variable {name} is not set (write ${{{name}:-default}} to give a default)"),
                ))
            }
        }
        rest = &tail[close + 1..];
        offset = start + close + 1;
    }
    out.push_str(rest);
    Ok(out)
}

/// The byte index of the `}` that closes the `${` at the start of `text`,
/// counting the `${` … `}` of nested defaults (`$${` is a literal).
fn closing_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$${") {
            i += 3;
            continue;
        }
        if bytes[i..].starts_with(b"${") {
            depth += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// A string or a list of strings, as `include: dir` or `include: [a, b]`.
fn string_list(node: &Node, key: &str, diags: &mut Diagnostics) -> Vec<(String, Mark)> {
    match &node.value {
        Value::Null => Vec::new(),
        Value::Scalar(s, _) => vec![(s.clone(), node.mark.clone())],
        Value::Seq(items) => items
            .iter()
            .filter_map(|item| match item.as_str() {
                Some(s) => Some((s.to_string(), item.mark.clone())),
                None => {
                    diags.push(Diagnostic::error(
                        item.mark.clone(),
                        format!("{key}: expected a path, found {}", item.describe()),
                    ));
                    None
                }
            })
            .collect(),
        Value::Map(_) => {
            diags.push(Diagnostic::error(
                node.mark.clone(),
                format!("{key}: expected a path or a list of paths, found a map"),
            ));
            Vec::new()
        }
    }
}

/// Merges every `*.yml`/`*.yaml` of each `include_path`/`include` directory
/// (in name order) into `root`: maps merge, lists extend, scalars overwrite.
/// Relative paths are taken from the main file's directory, then from the
/// working directory as Duct did.
fn merge_includes(root: &mut Node, base: &Path, env: &dyn Fn(&str) -> Option<String>, diags: &mut Diagnostics) {
    let mut paths = Vec::new();
    for key in ["include_path", "include"] {
        if let Some(node) = root.remove(key) {
            paths.extend(string_list(&node, key, diags));
        }
    }
    // A file is merged once however often it is named (twice would
    // duplicate its sources; ten thousand times, from a short list, would
    // read it ten thousand times into memory).
    let mut merged = std::collections::HashSet::new();
    for (path, mark) in paths {
        let candidates = [base.join(&path), PathBuf::from(&path)];
        let Some(found) = candidates.iter().find(|p| p.exists()) else {
            diags.push(Diagnostic::warning(
                mark,
                format!("include path {path} does not exist; nothing included from it"),
            ));
            continue;
        };
        let files = if found.is_dir() {
            match yaml_files(found) {
                Ok(IncludeDir { files, unreadable }) => {
                    for (file, e) in unreadable {
                        diags.push(Diagnostic::warning(
                            mark.clone(),
                            format!("cannot follow {} ({e}); nothing included from it", file.display()),
                        ));
                    }
                    files
                }
                Err(e) => {
                    diags.push(Diagnostic::error(
                        mark,
                        format!("cannot list include directory {}: {e}", found.display()),
                    ));
                    continue;
                }
            }
        } else {
            vec![found.clone()]
        };
        for file in files {
            if !merged.insert(std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone())) {
                diags.push(Diagnostic::warning(
                    mark.clone(),
                    format!("{} is included already; merged once", file.display()),
                ));
                continue;
            }
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(Diagnostic::error(
                        mark.clone(),
                        format!("cannot read included file {}: {e}", file.display()),
                    ));
                    continue;
                }
            };
            let Some(doc) = parse_document(&text, Arc::from(file.as_path()), env, diags) else {
                continue;
            };
            merge_into(root, doc, diags);
            tracing::debug!(file = %file.display(), "merged included configuration");
        }
    }
}

/// What an include directory holds.
struct IncludeDir {
    /// Its `*.yml`/`*.yaml` files, in name order.
    files: Vec<PathBuf>,
    /// The entries that could not be followed (a dangling symlink, a
    /// symlink loop, an entry that vanished while listed) and why.
    unreadable: Vec<(PathBuf, std::io::Error)>,
}

fn yaml_files(dir: &Path) -> std::io::Result<IncludeDir> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = match entry {
            Ok(e) => e.path(),
            Err(e) => {
                unreadable.push((dir.to_path_buf(), e));
                continue;
            }
        };
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            continue;
        }
        // `metadata` follows symlinks, so a dangling one or a loop fails here.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(_) => {}
            Err(e) => unreadable.push((path, e)),
        }
    }
    files.sort();
    unreadable.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(IncludeDir { files, unreadable })
}

fn merge_into(root: &mut Node, doc: Node, diags: &mut Diagnostics) {
    if doc.as_map().is_none() {
        if !doc.is_null() {
            diags.push(Diagnostic::error(
                doc.mark.clone(),
                format!("an included file must be a map of keys, found {}", doc.describe()),
            ));
        }
        return;
    }
    let Value::Map(entries) = doc.value else {
        return;
    };
    for (key, value) in entries {
        let name = key.as_str().unwrap_or_default().to_string();
        let Some(existing) = root.remove(&name) else {
            root.set(key, value);
            continue;
        };
        let merged = match (existing.value, value.value) {
            (Value::Map(mut have), Value::Map(add)) => {
                let mut m = Node::new(Value::Map(std::mem::take(&mut have)), existing.mark);
                for (k, v) in add {
                    m.set(k, v);
                }
                m
            }
            (Value::Seq(mut have), Value::Seq(add)) => {
                have.extend(add);
                Node::new(Value::Seq(have), existing.mark)
            }
            (_, v) => Node::new(v, value.mark),
        };
        root.set(key, merged);
    }
}

/// Removes `key` (a list of maps) from the root and labels each entry.
fn take_blocks(root: &mut Node, key: &str, diags: &mut Diagnostics) -> Vec<Block> {
    let Some(list) = root.remove(key) else {
        return Vec::new();
    };
    let described = list.describe();
    let items = match list.value {
        Value::Null => return Vec::new(),
        Value::Seq(items) => items,
        _ => {
            diags.push(Diagnostic::error(
                list.mark,
                format!("{key}: expected a list of blocks, found {described}"),
            ));
            return Vec::new();
        }
    };
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, node)| {
            let context = format!("{key}[{i}]");
            if node.as_map().is_none() {
                diags.push(Diagnostic::error(
                    node.mark.clone(),
                    format!("{context}: expected a map of options, found {}", node.describe()),
                ));
                return None;
            }
            Some(Block { node, context })
        })
        .collect()
}

/// Expands `blueprint` entries over `toolbox` templates: for each
/// combination of the blueprint's `sets` (cartesian product, first key
/// slowest) and each source of each named toolbox, one source whose options
/// are, in increasing precedence, the toolbox source's own, the toolbox
/// defaults, the blueprint defaults and the combination's values.
///
/// At most `room` sources (of `max_sources`) are made: a blueprint that
/// would make more is an error, found by counting before expanding.
fn expand_blueprints(root: &mut Node, max_sources: usize, mut room: usize, diags: &mut Diagnostics) -> Vec<Block> {
    let toolboxes = root.remove("toolbox");
    let Some(blueprints) = root.remove("blueprint") else {
        return Vec::new();
    };
    let blueprints = match blueprints.value {
        Value::Null => return Vec::new(),
        Value::Seq(items) => items,
        Value::Map(_) => vec![blueprints],
        _ => {
            diags.push(Diagnostic::error(
                blueprints.mark,
                "blueprint: expected a list of blueprints",
            ));
            return Vec::new();
        }
    };
    let toolbox_names: Vec<&str> = toolboxes
        .as_ref()
        .and_then(Node::as_map)
        .map(|m| m.iter().filter_map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();

    let mut out = Vec::new();
    for (b, blueprint) in blueprints.iter().enumerate() {
        let here = format!("blueprint[{b}]");
        if blueprint.as_map().is_none() {
            diags.push(Diagnostic::error(
                blueprint.mark.clone(),
                format!("{here}: expected a map with `toolbox` and `sets`"),
            ));
            continue;
        }
        let Some(names_node) = blueprint.get("toolbox") else {
            diags.push(Diagnostic::error(
                blueprint.mark.clone(),
                format!("{here}: missing `toolbox` (the name of the toolbox to use)"),
            ));
            continue;
        };
        let mut boxes = Vec::new();
        for (name, mark) in string_list(names_node, &format!("{here}.toolbox"), diags) {
            match toolboxes.as_ref().and_then(|t| t.get(&name)) {
                Some(tb) if tb.as_map().is_some() => boxes.push((name, tb)),
                Some(tb) => diags.push(Diagnostic::error(
                    tb.mark.clone(),
                    format!("toolbox.{name}: expected a map with `defaults` and `sources`"),
                )),
                None => diags.push(Diagnostic::error(
                    mark,
                    format!(
                        "{here}.toolbox: no toolbox named `{name}`{}",
                        did_you_mean(&name, toolbox_names.iter().copied())
                    ),
                )),
            }
        }
        let Some(sets) = sets_of(blueprint.get("sets"), &here, diags) else {
            continue;
        };
        let per_combination: usize = boxes
            .iter()
            .map(|(_, tb)| tb.get("sources").and_then(Node::as_seq).map_or(0, <[Node]>::len))
            .sum();
        let count = sets
            .iter()
            .try_fold(per_combination, |n, (_, values)| n.checked_mul(values.len()));
        match count {
            Some(n) if n <= room => room -= n,
            _ => {
                let factors: Vec<String> = sets
                    .iter()
                    .map(|(k, v)| format!("{} `{}`", v.len(), k.as_str().unwrap_or_default()))
                    .chain([format!("{per_combination} toolbox source(s)")])
                    .collect();
                let total = count.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
                let at = blueprint
                    .entry("sets")
                    .map_or(&blueprint.mark, |(k, _)| &k.mark)
                    .clone();
                diags.push(Diagnostic::error(
                    at,
                    format!(
                        "{here}: expands to {total} sources ({}), more than max_sources ({max_sources}) \
                         allows{}; raise max_sources if this is meant",
                        factors.join(" × "),
                        if room < max_sources {
                            format!(" with the {} sources before it", max_sources - room)
                        } else {
                            String::new()
                        }
                    ),
                ));
                continue;
            }
        }
        let combos = combinations(&sets);
        let blueprint_defaults = map_entries(blueprint.get("defaults"), &format!("{here}.defaults"), diags);
        for combo in &combos {
            let label = combo
                .iter()
                .map(|(k, v)| format!("{}: {}", k.as_str().unwrap_or_default(), v.as_str().unwrap_or("…")))
                .collect::<Vec<_>>()
                .join(", ");
            for (name, tb) in &boxes {
                let tb_defaults = map_entries(tb.get("defaults"), &format!("toolbox.{name}.defaults"), diags);
                let Some(sources) = tb.get("sources") else {
                    continue;
                };
                let Some(sources) = sources.as_seq() else {
                    diags.push(Diagnostic::error(
                        sources.mark.clone(),
                        format!("toolbox.{name}.sources: expected a list of sources"),
                    ));
                    continue;
                };
                for (s, source) in sources.iter().enumerate() {
                    if source.as_map().is_none() {
                        diags.push(Diagnostic::error(
                            source.mark.clone(),
                            format!("toolbox.{name}.sources[{s}]: expected a map of options"),
                        ));
                        continue;
                    }
                    let mut node = source.clone();
                    for (k, v) in tb_defaults.iter().chain(&blueprint_defaults).chain(combo) {
                        node.set(k.clone(), v.clone());
                    }
                    out.push(Block {
                        node,
                        context: format!("{here} toolbox {name} sources[{s}] {{{label}}}"),
                    });
                }
            }
        }
    }
    out
}

fn map_entries(node: Option<&Node>, context: &str, diags: &mut Diagnostics) -> Vec<(Node, Node)> {
    match node {
        None => Vec::new(),
        Some(n) if n.is_null() => Vec::new(),
        Some(n) => match n.as_map() {
            Some(m) => m.to_vec(),
            None => {
                diags.push(Diagnostic::error(
                    n.mark.clone(),
                    format!("{context}: expected a map, found {}", n.describe()),
                ));
                Vec::new()
            }
        },
    }
}

/// The `sets` of a blueprint: each key with its list of values.
fn sets_of<'a>(sets: Option<&'a Node>, here: &str, diags: &mut Diagnostics) -> Option<Vec<(Node, &'a [Node])>> {
    let mut out = Vec::new();
    let Some(sets) = sets.filter(|n| !n.is_null()) else {
        return Some(out);
    };
    let Some(entries) = sets.as_map() else {
        diags.push(Diagnostic::error(
            sets.mark.clone(),
            format!("{here}.sets: expected a map, found {}", sets.describe()),
        ));
        return Some(out);
    };
    for (key, values) in entries {
        let Some(list) = values.as_seq() else {
            diags.push(Diagnostic::error(
                values.mark.clone(),
                format!(
                    "{here}.sets.{}: expected a list of values, found {}",
                    key.as_str().unwrap_or_default(),
                    values.describe()
                ),
            ));
            return None;
        };
        out.push((key.clone(), list));
    }
    Some(out)
}

/// Every combination of the `sets` values (first key slowest); no `sets`
/// make one, empty, combination.
fn combinations(sets: &[(Node, &[Node])]) -> Vec<Vec<(Node, Node)>> {
    let mut combos: Vec<Vec<(Node, Node)>> = vec![Vec::new()];
    for (key, values) in sets {
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    combos
}

/// Duct's global `server`/`port`/`proto`: with no `outputs`, a Riemann
/// output to `server:port`.
fn legacy_output(root: &Node, diags: &mut Diagnostics) -> Option<Block> {
    let server = root.get("server")?;
    if server.is_null() {
        return None;
    }
    let mark = server.mark.clone();
    let proto = root.get("proto").and_then(Node::as_str).unwrap_or("tcp");
    let output = match proto.to_ascii_lowercase().as_str() {
        "tcp" => "duct.outputs.riemann.RiemannTCP",
        "udp" => "duct.outputs.riemann.RiemannUDP",
        other => {
            let at = root.get("proto").map(|n| n.mark.clone()).unwrap_or(mark);
            diags.push(Diagnostic::error(at, format!("proto: `{other}` is not `tcp` or `udp`")));
            return None;
        }
    };
    let key = |k: &str| Node::new(Value::Scalar(k.into(), Style::Plain), mark.clone());
    let mut entries = vec![
        (key("output"), Node::string(output, mark.clone())),
        (key("server"), server.clone()),
    ];
    if let Some(port) = root.get("port") {
        entries.push((key("port"), port.clone()));
    }
    Some(Block {
        node: Node::new(Value::Map(entries), mark),
        context: "server (legacy Riemann output)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn load(text: &str) -> (Option<Tree>, Diagnostics) {
        load_in(text, Path::new("/nonexistent"), &[])
    }

    fn load_in(text: &str, base: &Path, vars: &[(&str, &str)]) -> (Option<Tree>, Diagnostics) {
        let mut diags = Diagnostics::default();
        let env = env_of(vars);
        let tree = load_text(text, Arc::from(Path::new("main.yml")), base, &env, &mut diags);
        (tree, diags)
    }

    fn services(tree: &Tree) -> Vec<String> {
        tree.sources
            .iter()
            .map(|b| b.node.get("service").and_then(Node::as_str).unwrap_or("?").to_string())
            .collect()
    }

    #[test]
    fn substitution_handles_defaults_escapes_and_errors() {
        let env = env_of(&[("NODE", "n1"), ("EMPTY", "")]);
        assert_eq!(substitute("${NODE}", &env).unwrap(), "n1");
        assert_eq!(substitute("a-${NODE}-b", &env).unwrap(), "a-n1-b");
        assert_eq!(substitute("${MISSING:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(substitute("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(substitute("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(substitute("cost $5 and $${NODE}", &env).unwrap(), "cost $5 and ${NODE}");
        let (at, msg) = substitute("x ${MISSING}", &env).unwrap_err();
        assert_eq!(at, 2);
        assert!(msg.contains("MISSING is not set"), "{msg}");
        assert_eq!(substitute("${NODE", &env).unwrap_err().0, 0);
        assert!(substitute("${1BAD}", &env).unwrap_err().1.contains("not a valid"));
    }

    #[test]
    fn nested_defaults_are_expanded_when_used() {
        let env = env_of(&[("Y", "why"), ("Z", "zed")]);
        assert_eq!(substitute("${X:-${Y:-z}}", &env).unwrap(), "why");
        assert_eq!(substitute("${X:-${W:-z}}", &env).unwrap(), "z");
        assert_eq!(substitute("a${X:-b${W:-${Z}}c}d", &env).unwrap(), "abzedcd");
        assert_eq!(
            substitute("${Y:-${UNSET}}", &env).unwrap(),
            "why",
            "an unused default is not expanded"
        );
        assert_eq!(substitute("${X:-$${Y}}", &env).unwrap(), "${Y}");
        assert_eq!(
            substitute("${X:-{}}", &env).unwrap(),
            "{}",
            "a brace without `$` does not nest"
        );
        // Errors inside a default point into it.
        let (at, msg) = substitute("${X:-${W:-${UNSET}}}", &env).unwrap_err();
        assert_eq!(at, 10);
        assert!(msg.contains("UNSET is not set"), "{msg}");
        assert_eq!(substitute("${X:-${W:-z}", &env).unwrap_err().0, 0);
        let deep = format!("{}z{}", "${X:-".repeat(20), "}".repeat(20));
        assert!(substitute(&deep, &env).unwrap_err().1.contains("nested more than 8"));
    }

    #[test]
    fn interpolation_applies_to_values_with_located_errors() {
        let (tree, diags) = load_in(
            "sources:\n  - service: s\n    hostname: ${NODE_NAME}\n    port: ${PORT:-80}\n",
            Path::new("/nonexistent"),
            &[("NODE_NAME", "node-7")],
        );
        assert!(!diags.has_errors(), "{diags}");
        let src = &tree.unwrap().sources[0].node;
        assert_eq!(src.get("hostname").unwrap().as_str(), Some("node-7"));
        assert_eq!(src.get("port").unwrap().as_str(), Some("80"));
        assert!(matches!(src.get("port").unwrap().value, Value::Scalar(_, Style::Plain)));

        let (_, diags) = load("sources:\n  - service: s\n    hostname: 'h-${NOPE}'\n");
        let err = diags.errors().next().unwrap();
        let mark = err.mark.clone().unwrap();
        assert_eq!((mark.line, mark.col), (3, 18));
    }

    #[test]
    fn includes_merge_maps_extend_lists_and_overwrite_scalars() {
        let dir = tempdir("includes");
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            dir.join("conf.d/10-a.yml"),
            "interval: 5\nsources:\n  - service: from-a\ntoolbox:\n  t2: {sources: []}\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/20-b.yaml"), "sources:\n  - service: from-b\n").unwrap();
        std::fs::write(dir.join("conf.d/ignored.txt"), "interval: 999\n").unwrap();
        let (tree, diags) = load_in(
            "interval: 10\ninclude_path: conf.d\ntoolbox:\n  t1: {sources: []}\nsources:\n  - service: main\n",
            &dir,
            &[],
        );
        assert!(!diags.has_errors(), "{diags}");
        let tree = tree.unwrap();
        assert_eq!(services(&tree), ["main", "from-a", "from-b"]);
        assert_eq!(tree.root.get("interval").unwrap().as_str(), Some("5"));
        assert!(tree.root.get("toolbox").is_none(), "consumed by blueprint expansion");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_include_directory_is_a_warning() {
        let (tree, diags) = load("include: /definitely/not/here\n");
        assert!(tree.is_some());
        assert!(!diags.has_errors());
        let w = diags.warnings().next().unwrap();
        assert!(w.message.contains("does not exist"));
    }

    #[test]
    fn blueprints_expand_the_cartesian_product_with_precedence() {
        let text = "
toolbox:
  web:
    defaults: {interval: 30, ttl: 5}
    sources:
      - {service: ping, source: p, interval: 1, hostname: own, ttl: 1}
      - {service: http, source: h}
blueprint:
  - toolbox: web
    defaults: {ttl: 7}
    sets:
      hostname: [a, b, c]
      port: [80, 443]
";
        let (tree, diags) = load(text);
        assert!(!diags.has_errors(), "{diags}");
        let tree = tree.unwrap();
        assert_eq!(tree.sources.len(), 3 * 2 * 2);
        let first = &tree.sources[0].node;
        // own < toolbox defaults < blueprint defaults < combination
        assert_eq!(first.get("interval").unwrap().as_str(), Some("30"));
        assert_eq!(first.get("ttl").unwrap().as_str(), Some("7"));
        assert_eq!(first.get("hostname").unwrap().as_str(), Some("a"));
        assert_eq!(first.get("port").unwrap().as_str(), Some("80"));
        let hosts_ports: Vec<(String, String)> = tree
            .sources
            .iter()
            .filter(|b| b.node.get("service").unwrap().as_str() == Some("ping"))
            .map(|b| {
                (
                    b.node.get("hostname").unwrap().as_str().unwrap().to_string(),
                    b.node.get("port").unwrap().as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            hosts_ports,
            [
                ("a", "80"),
                ("a", "443"),
                ("b", "80"),
                ("b", "443"),
                ("c", "80"),
                ("c", "443")
            ]
            .map(|(h, p)| (h.to_string(), p.to_string()))
        );
        assert!(tree.sources[0]
            .context
            .starts_with("blueprint[0] toolbox web sources[0]"));
    }

    #[test]
    fn blueprints_accept_a_list_of_toolboxes_and_report_unknown_ones() {
        let text = "
toolbox:
  a: {sources: [{service: one}]}
  b: {sources: [{service: two}, {service: three}]}
blueprint:
  - toolbox: [a, b]
    sets: {hostname: [x, y]}
  - toolbox: webb
";
        let (tree, diags) = load(text);
        assert_eq!(services(&tree.unwrap()), ["one", "two", "three", "one", "two", "three"]);
        let err = diags.errors().next().unwrap();
        assert!(err.message.contains("no toolbox named `webb`"), "{}", err.message);
        assert_eq!(err.mark.as_ref().unwrap().line, 8);
    }

    #[test]
    fn legacy_server_makes_a_riemann_output() {
        let (tree, _) = load("server: riemann.local\nport: 5556\nproto: udp\n");
        let out = &tree.unwrap().outputs[0].node;
        assert_eq!(
            out.get("output").unwrap().as_str(),
            Some("duct.outputs.riemann.RiemannUDP")
        );
        assert_eq!(out.get("server").unwrap().as_str(), Some("riemann.local"));
        assert_eq!(out.get("port").unwrap().as_str(), Some("5556"));
        let (tree, _) = load("server: r\noutputs:\n  - output: duct.outputs.null.Null\n");
        assert_eq!(tree.unwrap().outputs.len(), 1, "explicit outputs win");
    }

    #[test]
    fn bad_yaml_and_bad_shapes_are_errors() {
        let (tree, diags) = load("sources: [\n");
        assert!(tree.is_none());
        assert!(diags.errors().next().unwrap().message.starts_with("invalid YAML"));
        let (_, diags) = load("- a\n- b\n");
        assert!(diags.has_errors());
        let (_, diags) = load("sources: {a: 1}\n");
        assert!(diags.errors().next().unwrap().message.contains("expected a list"));
        let (_, diags) = load("sources:\n  - just-a-string\n");
        assert!(diags.errors().next().unwrap().message.contains("sources[0]"));
    }

    #[test]
    fn blueprint_expansion_is_capped_before_expanding() {
        // Ten keys of ten values: 10^10 sources in 600 bytes.
        let mut text =
            "toolbox:\n  t: {sources: [{service: s, source: x}]}\nblueprint:\n  - toolbox: t\n    sets:\n".to_string();
        for k in 0..10 {
            text.push_str(&format!("      k{k}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"));
        }
        let (tree, diags) = load(&text);
        assert!(tree.unwrap().sources.is_empty());
        let err = diags.errors().next().unwrap();
        assert!(
            err.message
                .starts_with("blueprint[0]: expands to 10000000000 sources (10 `k0` × "),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("more than max_sources (100000)"),
            "{}",
            err.message
        );
        assert_eq!(err.mark.as_ref().unwrap().line, 5, "at `sets`");

        // The cap counts the explicit sources too, and can be raised.
        let small = "max_sources: 5\nsources: [{service: a}, {service: b}]\ntoolbox:\n  t: {sources: [{service: s}, {service: u}]}\nblueprint:\n  - {toolbox: t, sets: {host: [x, y]}}\n";
        let (_, diags) = load(small);
        let err = diags.errors().next().unwrap();
        assert!(err.message.contains("expands to 4 sources (2 `host` × 2 toolbox source(s)), more than max_sources (5) allows with the 2 sources before it"), "{}", err.message);
        let (tree, diags) = load(&small.replace("max_sources: 5", "max_sources: 6"));
        assert!(!diags.has_errors(), "{diags}");
        assert_eq!(tree.unwrap().sources.len(), 6);
        let (_, diags) = load("max_sources: 1\nsources: [{service: a}, {service: b}]\n");
        let err = diags.errors().next().unwrap();
        assert!(
            err.message.contains("2 sources, more than max_sources (1)"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_file_included_twice_is_merged_once() {
        let dir = tempdir("twice");
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/a.yml"), "sources:\n  - service: a\n").unwrap();
        std::os::unix::fs::symlink(dir.join("conf.d"), dir.join("alias.d")).unwrap();
        let (tree, diags) = load_in(
            "include: [conf.d, conf.d, alias.d, conf.d/a.yml]\nsources:\n  - service: main\n",
            &dir,
            &[],
        );
        assert!(!diags.has_errors(), "{diags}");
        assert_eq!(services(&tree.unwrap()), ["main", "a"]);
        let warnings: Vec<&str> = diags.warnings().map(|w| w.message.as_str()).collect();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings.iter().all(|w| w.ends_with("is included already; merged once")),
            "{warnings:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unfollowable_files_in_an_include_directory_are_warnings() {
        let dir = tempdir("dangling");
        let conf = dir.join("conf.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("10-ok.yml"), "sources:\n  - service: ok\n").unwrap();
        std::os::unix::fs::symlink(conf.join("gone.yml"), conf.join("20-dangling.yml")).unwrap();
        std::os::unix::fs::symlink(conf.join("30-loop.yaml"), conf.join("30-loop.yaml")).unwrap();
        std::os::unix::fs::symlink(conf.join("gone"), conf.join("notes.txt")).unwrap();
        let (tree, diags) = load_in("include: conf.d\n", &dir, &[]);
        assert!(!diags.has_errors(), "{diags}");
        assert_eq!(services(&tree.unwrap()), ["ok"]);
        let warnings: Vec<&str> = diags.warnings().map(|w| w.message.as_str()).collect();
        assert_eq!(warnings.len(), 2, "only the YAML names warn: {warnings:?}");
        assert!(
            warnings[0].contains("20-dangling.yml") && warnings[0].contains("nothing included"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("30-loop.yaml"), "{warnings:?}");
        let w = diags.warnings().next().unwrap();
        assert_eq!(w.mark.as_ref().unwrap().line, 1, "at the include");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("duct-core-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
