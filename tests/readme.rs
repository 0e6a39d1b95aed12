//! Every Rust snippet in README.md builds exactly as given, with the dependency block shown just
//! before it: each becomes the `main.rs` of a scratch crate whose `Cargo.toml` is that block
//! (with `tower-sse` pointed at this checkout), checked with `cargo check`.
//!
//! Needs the crates.io registry and a few minutes, so it is `#[ignore]`d; `.ci/run` runs it
//! with `-- --ignored`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `(dependencies, code)` for every ```` ```rust ```` block of `markdown`, the dependencies being
/// the nearest ```` ```toml ```` block before it.
fn snippets(markdown: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut deps: Option<String> = None;
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let block = block.join("\n") + "\n";
        if lang.starts_with("toml") {
            deps = Some(block);
        } else if lang.starts_with("rust") {
            out.push((deps.take(), block));
        }
    }
    out
}

/// The dependency block with `tower-sse` taken from this checkout.
fn manifest(n: usize, deps: &str, root: &Path) -> String {
    let path = format!("path = {:?}, ", root.display().to_string());
    let deps: String = deps
        .lines()
        .map(|line| match line.strip_prefix("tower-sse = { ") {
            Some(rest) => format!("tower-sse = {{ {path}{rest}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    format!("[package]\nname = \"readme-snippet-{n}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n\n{deps}")
}

#[test]
fn the_reader_pairs_each_snippet_with_its_dependencies() {
    let md =
        "x\n```toml\n[dependencies]\na = \"1\"\n```\n```rust\nfn main() {}\n```\n```rust\n```\n";
    let found = snippets(md);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].0.as_deref(), Some("[dependencies]\na = \"1\"\n"));
    assert_eq!(found[0].1, "fn main() {}\n");
    assert_eq!(found[1].0, None, "a block is used once");
    let m = manifest(1, "tower-sse = { version = \"0.1\" }\n", Path::new("/r"));
    assert!(
        m.contains("tower-sse = { path = \"/r\", version = \"0.1\" }"),
        "{m}"
    );
}

#[test]
#[ignore = "needs the crates.io registry and a few minutes"]
fn every_readme_snippet_builds_with_the_dependencies_it_shows() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let found = snippets(&readme);
    assert!(found.len() >= 6, "README snippets: {}", found.len());
    let scratch = root.join("target/readme-snippets");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut failures = Vec::new();
    for (n, (deps, code)) in found.iter().enumerate() {
        let Some(deps) = deps else {
            failures.push(format!(
                "snippet {n} has no dependency block before it:\n{code}"
            ));
            continue;
        };
        let dir = scratch.join(format!("snippet-{n}"));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("Cargo.toml"), manifest(n, deps, &root)).unwrap();
        std::fs::write(dir.join("src/main.rs"), code).unwrap();
        let out = Command::new(&cargo)
            .args(["check", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", scratch.join("target"))
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cargo runs");
        if !out.status.success() {
            failures.push(format!(
                "snippet {n} does not build:\n{code}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
