//! The crate's module graph flows one way: no module depends, directly or through others, on a
//! module that depends on it. Read from the sources: every `crate::` path outside comments and
//! unit tests is an edge, with names re-exported at the crate root traced to their module.
//! Inside `src/hub/` the files must flow one way too (`super::` paths read the same way); a
//! folder's root (`mod.rs`, the hub's handles and builder) may use its files and be used by
//! them, as the crate root is.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Module name of a source file: `src/body.rs` is `body`, anything under `src/hub/` is `hub`.
fn module_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (and doc links), string literals and its unit-test
/// module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let (mut in_string, mut escaped) = (false, false);
        for c in line.chars() {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => in_string = !in_string,
                (false, _, c) => out.push(c),
                _ => {}
            }
        }
        out.push('\n');
    }
    out
}

/// Every identifier in the paths that follow `crate::`, braces included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut idents = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        idents.extend(
            rest[..end]
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    idents
}

/// Names the crate root re-exports (`pub use module::{A, B};`), with their module.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let exports = root_exports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f, &src))
        .filter(|m| m != "lib")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(file, &src);
        if from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let edges = graph.entry(from.clone()).or_default();
        for ident in crate_paths(&code(&text)) {
            let to = if modules.contains(&ident) {
                Some(ident)
            } else {
                exports.get(&ident).cloned()
            };
            if let Some(to) = to.filter(|to| *to != from) {
                edges.insert(to);
            }
        }
    }
    graph
}

/// A cycle through `node`, if there is one, as the list of modules on it.
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| n == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(cycle) = find_cycle(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    for (from, to) in &graph {
        println!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = find_cycle(&graph, node, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "modules in a cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_reader_finds_real_edges_and_cycles() {
    // The reader itself, on a known graph: it must see these edges, or the test above proves
    // nothing.
    let graph = graph();
    assert!(graph["body"].contains("event"), "{:?}", graph["body"]);
    assert!(graph["layer"].contains("service"), "{:?}", graph["layer"]);
    assert!(
        graph["hub"].contains("event"),
        "re-exported names are traced"
    );
    let known: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    let cycle = find_cycle(&known, "d", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(cycle.unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = known.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert!(find_cycle(&acyclic, "d", &mut Vec::new(), &mut BTreeSet::new()).is_none());
}

/// Every identifier in the paths that follow `prefix` (`super::`, `crate::hub::`).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    crate_paths(&code.replace(prefix, "crate::"))
}

/// The files of a folder of `src/` (its root `mod.rs` left out) and the edges between them:
/// `super::x` and `crate::<folder>::x` paths, and names the folder's root re-exports traced to
/// the file that defines them. Edges to the folder's root are not edges between its files.
fn folder_graph(folder: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(folder);
    let root = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let exports = root_exports(&code(&root));
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    // A file's name within the folder: `topic`, `redis/session` (`redis` for `redis/mod.rs`).
    let name = |path: &Path| {
        let rel = path.strip_prefix(&dir).unwrap().with_extension("");
        let rel = rel.to_string_lossy().into_owned();
        rel.strip_suffix("/mod").unwrap_or(&rel).to_owned()
    };
    let names: BTreeSet<String> = files.iter().map(|f| name(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| {
        let n = name(f);
        n != "mod" && !n.ends_with("tests")
    }) {
        let from = name(file);
        let text = code(&std::fs::read_to_string(file).unwrap());
        // `super::` of a file in a subfolder is that subfolder's root.
        let parent = from.rsplit_once('/').map(|(p, _)| format!("{p}/"));
        let mut targets = Vec::new();
        for ident in paths_after(&text, "super::") {
            targets.push(match &parent {
                Some(p) if !from.ends_with('/') && names.contains(&format!("{p}{ident}")) => {
                    format!("{p}{ident}")
                }
                Some(p) => p.trim_end_matches('/').to_owned(),
                None => ident,
            });
        }
        targets.extend(paths_after(&text, &format!("crate::{folder}::")));
        let edges = graph.entry(from.clone()).or_default();
        for ident in targets {
            let to = if names.contains(&ident) {
                Some(ident)
            } else {
                exports.get(&ident).cloned()
            };
            // A subfolder's root is not one of its own files either.
            let own_root = parent.as_deref().map(|p| p.trim_end_matches('/'));
            if let Some(to) = to.filter(|to| *to != from && to != "mod" && Some(&**to) != own_root)
            {
                edges.insert(to);
            }
        }
    }
    graph
}

#[test]
fn the_files_inside_the_hub_depend_on_each_other_one_way() {
    let graph = folder_graph("hub");
    for (from, to) in &graph {
        println!(
            "hub/{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    // The reader sees the edges it must.
    assert!(graph["topic"].contains("merge"), "{:?}", graph["topic"]);
    assert!(graph["feed"].contains("topic"), "{:?}", graph["feed"]);
    assert!(
        graph["redis/session"].contains("redis/wire"),
        "{:?}",
        graph["redis/session"]
    );
    assert!(
        graph["redis/session"].contains("broker"),
        "{:?}",
        graph["redis/session"]
    );
    assert!(
        graph["subscription"].contains("cursor"),
        "re-exports traced: {:?}",
        graph["subscription"]
    );
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = find_cycle(&graph, node, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "hub files in a cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}
