//! Tidy checks, in the spirit of rust-analyzer's: the map in
//! ARCHITECTURE.md stays true to the code, and the docs' relative links
//! stay whole. They run as tests, so `cargo xtask test` (and CI) fails the
//! moment a module is added without a line in the map or a doc is moved
//! from under a link.

use std::path::{Path, PathBuf};

/// Every crate directory and its Rust modules, as paths relative to the
/// crate (`src/sources/agent.rs`), skipping tests, benches and examples.
fn crates(root: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.push(root.join("xtask"));
    dirs.sort();
    dirs.into_iter()
        .filter(|d| d.join("Cargo.toml").is_file())
        .map(|d| {
            let name = d
                .strip_prefix(root)
                .unwrap_or(&d)
                .to_string_lossy()
                .into_owned();
            let mut modules = Vec::new();
            rust_files(&d.join("src"), &mut modules);
            let modules = modules
                .into_iter()
                .filter_map(|m| m.strip_prefix(&d).ok().map(Path::to_path_buf))
                .collect();
            (name, modules)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The names a code map may call a module by: `agent.rs`, `agent`,
/// `sources/agent.rs`; a `mod.rs` or `lib.rs`/`main.rs` by its directory
/// or crate, which the section heading already names.
fn names(module: &Path) -> Option<Vec<String>> {
    let file = module.file_name()?.to_str()?;
    if matches!(file, "lib.rs" | "main.rs") {
        return None;
    }
    let stem = module.file_stem()?.to_str()?;
    let parent = module.parent()?.file_name()?.to_str()?.to_string();
    let (stem, parent) = if stem == "mod" {
        let grand = module
            .parent()?
            .parent()?
            .file_name()?
            .to_str()?
            .to_string();
        (parent, grand)
    } else {
        (stem.to_string(), parent)
    };
    Some(vec![
        format!("`{stem}`"),
        format!("`{stem}.rs`"),
        format!("{stem}.rs"),
        format!("`{parent}/{stem}"),
        format!("{parent}::{stem}"),
        format!("`{stem}::"),
        format!("`{stem} "),
    ])
}

/// The code map's section for `krate`: from its heading to the next.
fn section<'a>(map: &'a str, krate: &str) -> Option<&'a str> {
    let heading = map
        .match_indices("\n### ")
        .find(|(i, _)| {
            let line = map[i + 1..].lines().next().unwrap_or("");
            line.contains(&format!("`{krate}`"))
        })
        .map(|(i, _)| i + 1)?;
    let end = map[heading + 4..]
        .find("\n### ")
        .or_else(|| map[heading + 4..].find("\n## "))
        .map_or(map.len(), |e| heading + 4 + e);
    Some(&map[heading..end])
}

/// What the code map misses: crates without a section, modules their
/// section does not name.
pub fn unmapped(root: &Path) -> Vec<String> {
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
    let mut missing = Vec::new();
    for (krate, modules) in crates(root) {
        let Some(text) = section(&map, &krate) else {
            missing.push(format!("{krate}: no section in the code map"));
            continue;
        };
        for m in modules {
            let Some(names) = names(&m) else { continue };
            if !names.iter().any(|n| text.contains(n.as_str())) {
                missing.push(format!("{krate}/{}", m.display()));
            }
        }
    }
    missing
}

/// Markdown files the repository's docs are made of.
fn docs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("crates/leak-zoo/README.md"),
    ];
    if let Ok(d) = std::fs::read_dir(root.join("docs")) {
        out.extend(
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "md")),
        );
    }
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// `[text](target)` targets of a markdown text, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// Relative links whose file is not there: `doc: target`.
pub fn broken_links(root: &Path) -> Vec<String> {
    let mut broken = Vec::new();
    for doc in docs(root) {
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        let dir = doc.parent().unwrap_or(root);
        for target in links(&text) {
            let external = target.contains("://") || target.starts_with("mailto:");
            let path = target.split('#').next().unwrap_or("");
            if external || path.is_empty() {
                continue;
            }
            if !dir.join(path).exists() {
                let shown = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
                broken.push(format!("{shown}: {target}"));
            }
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::workspace::root()
    }

    #[test]
    fn every_crate_and_module_is_in_the_code_map() {
        let missing = unmapped(&root());
        assert!(
            missing.is_empty(),
            "ARCHITECTURE.md's code map does not name:\n  {}",
            missing.join("\n  ")
        );
    }

    #[test]
    fn every_relative_link_in_the_docs_resolves() {
        let broken = broken_links(&root());
        assert!(
            broken.is_empty(),
            "broken relative links:\n  {}",
            broken.join("\n  ")
        );
    }

    #[test]
    fn the_checks_can_fail() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("crates/a/src/sub")).unwrap();
        std::fs::create_dir_all(dir.join("xtask/src")).unwrap();
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        for f in [
            "crates/a/Cargo.toml",
            "xtask/Cargo.toml",
            "xtask/src/main.rs",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        for f in ["lib.rs", "named.rs", "sub/mod.rs", "sub/hidden.rs"] {
            std::fs::write(dir.join("crates/a/src").join(f), "").unwrap();
        }
        std::fs::write(
            dir.join("ARCHITECTURE.md"),
            "# A\n\n## Code map\n\n### `crates/a`\n\n`named.rs` and `sub`.\n\n### `xtask`\n\nmain.\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("README.md"),
            "[ok](docs/x.md) [gone](docs/gone.md#a) [web](https://example.org)\n```\n[code](nowhere)\n```\n",
        )
        .unwrap();
        std::fs::write(dir.join("docs/x.md"), "[up](../README.md#top)\n").unwrap();
        assert_eq!(unmapped(&dir), vec!["crates/a/src/sub/hidden.rs"]);
        assert_eq!(broken_links(&dir), vec!["README.md: docs/gone.md#a"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
