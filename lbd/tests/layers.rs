//! The module layering of the lbd library, read from its source:
//!
//! * no import cycle between modules (files) or between top-level modules;
//! * the hot path (accept, pick, connect, copy) reaches nothing of the
//!   control side: not health, admin, xdp, the server, the services or
//!   memory housekeeping, not even through another module;
//! * from `lbd-config` the hot path uses model types only (no parsing,
//!   loading or validation functions).
//!
//! Doc comments and `#[cfg(test)] mod tests` blocks do not count. Run with
//! `--nocapture` to print the top-level module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The hot path and the layers below it that it may use.
const HOT_PATH: &[&str] = &[
    "runtime", "proxy", "pick", "worker", "balance", "state", "snapshot", "sockets", "events",
    "context", "fault", "queue", "clock",
];

/// Control-side modules the hot path must never reach.
const CONTROL: &[&str] = &[
    "health",
    "admin",
    "xdp",
    "server",
    "service",
    "memory",
    "demo",
    "tls",
    "pidfile",
    "limits",
    "notify",
    "daemon",
    "takeover",
    "handoff",
    "haproxy_cli",
];

/// A module's path (`proxy::tcp`) and its code without comments and tests.
struct Module {
    path: String,
    code: String,
}

fn modules() -> Vec<Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files, 0);
    files
        .into_iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n != "main.rs" && n != "tests.rs")
        })
        .map(|f| {
            let rel = f.strip_prefix(&src).expect("under src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&f).expect("read source");
            Module {
                path: parts.join("::"),
                code: strip(&text),
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    assert!(depth < 8, "source tree too deep");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out, depth + 1);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code without comment lines and without a trailing test module.
fn strip(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path the code names: `crate::a::b`, `super::x`, `self::y`, and
/// the first segment of `use` items (for child modules), with `{...}`
/// groups expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0
            || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if at_word_start {
            for root in ["crate", "super", "self"] {
                let rest: String = bytes[i..].iter().take(root.len() + 2).collect();
                if rest == format!("{root}::") {
                    let (trees, end) = parse_tree(&bytes, i);
                    found.extend(trees);
                    i = end;
                    break;
                }
            }
            let rest: String = bytes[i..].iter().take(4).collect();
            if rest == "use " {
                let (trees, end) = parse_tree(&bytes, i + 4);
                found.extend(trees);
                i = end;
            }
        }
        i += 1;
    }
    found
}

/// Parses a use tree or a plain path starting at `i`: returns every full
/// path in it and where it ended.
fn parse_tree(s: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        while i < s.len() && s[i] == ' ' {
            i += 1;
        }
        let start = i;
        while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        if start == i {
            if i < s.len() && s[i] == '{' {
                let mut all = Vec::new();
                i += 1;
                loop {
                    while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
                        i += 1;
                    }
                    if i >= s.len() || s[i] == '}' {
                        return (all, i + 1);
                    }
                    let (inner, end) = parse_tree(s, i);
                    for p in inner {
                        let mut full = prefix.clone();
                        full.extend(p);
                        all.push(full);
                    }
                    i = end;
                    // Skip `as name` and anything else up to the separator.
                    while i < s.len() && s[i] != ',' && s[i] != '}' {
                        i += 1;
                    }
                }
            }
            return (vec![prefix], i);
        }
        prefix.push(s[start..i].iter().collect());
        if s.get(i) == Some(&':') && s.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(p, _)| p)
}

/// The module a path in `from` refers to: the longest known module prefix.
fn resolve(from: &str, path: &[String], known: &BTreeSet<String>) -> Option<String> {
    let (mut base, rest): (String, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (String::new(), &path[1..]),
        Some("self") => (from.to_owned(), &path[1..]),
        Some("super") => {
            let mut base = from.to_owned();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base = parent(&base).to_owned();
                rest = &rest[1..];
            }
            (base, rest)
        }
        // `use child::...` inside a module that declares `child`.
        Some(first) if known.contains(&join(from, first)) => (from.to_owned(), path),
        _ => return None,
    };
    let mut found = None;
    for segment in rest {
        let next = join(&base, segment);
        if !known.contains(&next) {
            break;
        }
        base = next;
        found = Some(base.clone());
    }
    found.or_else(|| (!base.is_empty()).then_some(base))
}

fn join(base: &str, segment: &str) -> String {
    if base.is_empty() {
        segment.to_owned()
    } else {
        format!("{base}::{segment}")
    }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Module -> the modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let known: BTreeSet<String> = modules.iter().map(|m| m.path.clone()).collect();
    modules
        .iter()
        .map(|m| {
            let deps = paths(&m.code)
                .iter()
                .filter_map(|p| resolve(&m.path, p, &known))
                .filter(|d| *d != m.path && !m.path.starts_with(&format!("{d}::")))
                .collect();
            (m.path.clone(), deps)
        })
        .collect()
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, stack) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

fn top_level(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, deps) in graph {
        let entry = out.entry(top(from).to_owned()).or_default();
        entry.extend(
            deps.iter()
                .map(|d| top(d).to_owned())
                .filter(|d| d != top(from)),
        );
    }
    out
}

#[test]
fn the_parser_sees_grouped_relative_and_child_imports() {
    let known: BTreeSet<String> = [
        "proxy",
        "proxy::tcp",
        "proxy::local",
        "state",
        "health",
        "health::checker",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let code = "use crate::proxy::{local::Local, tcp};\nuse super::tcp::x;\nlet _ = crate::state::now_ms();\npub use checker::HealthService;\n";
    let resolved: BTreeSet<String> = paths(code)
        .iter()
        .filter_map(|p| resolve("health", p, &known))
        .collect();
    assert_eq!(
        resolved,
        ["health::checker", "proxy::local", "proxy::tcp", "state"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let resolved = paths("use super::local::Local;")
        .iter()
        .filter_map(|p| resolve("proxy::tcp", p, &known))
        .collect::<Vec<_>>();
    assert_eq!(resolved, ["proxy::local"]);
}

#[test]
fn no_import_cycles() {
    let graph = graph();
    assert!(graph.len() > 40, "read the source: {} modules", graph.len());
    let top = top_level(&graph);
    println!("top-level module graph of lbd (module -> what it uses):");
    for (module, deps) in &top {
        println!(
            "  {module} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert_eq!(cycle(&graph), None, "a cycle between modules");
    assert_eq!(cycle(&top), None, "a cycle between top-level modules");
}

#[test]
fn the_hot_path_reaches_nothing_of_the_control_side() {
    let top = top_level(&graph());
    for start in HOT_PATH {
        assert!(top.contains_key(*start), "no module {start}");
        let mut seen = BTreeSet::new();
        let mut todo = vec![(*start).to_owned()];
        let mut via: BTreeMap<String, String> = BTreeMap::new();
        while let Some(m) = todo.pop() {
            if !seen.insert(m.clone()) {
                continue;
            }
            for d in top.get(&m).into_iter().flatten() {
                via.entry(d.clone()).or_insert_with(|| m.clone());
                todo.push(d.clone());
            }
        }
        for control in CONTROL {
            assert!(
                !seen.contains(*control),
                "{start} reaches {control} (through {})",
                via.get(*control).map_or("?", String::as_str)
            );
        }
    }
}

#[test]
fn the_hot_path_uses_only_model_types_from_lbd_config() {
    for m in modules() {
        if !HOT_PATH.contains(&top(&m.path)) {
            continue;
        }
        let mut rest = m.code.as_str();
        while let Some(at) = rest.find("lbd_config::") {
            rest = &rest[at + "lbd_config::".len()..];
            let named: String = match rest.strip_prefix('{') {
                Some(group) => group.chars().take_while(|c| *c != '}').collect(),
                None => rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            };
            for item in named.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                assert!(
                    item.starts_with(|c: char| c.is_ascii_uppercase()),
                    "{} uses lbd_config::{item}, which is not a model type",
                    m.path
                );
            }
        }
    }
}
