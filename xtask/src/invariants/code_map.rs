//! The code map of ARCHITECTURE.md against the real crate graph: the list
//! between `<!-- crate-graph -->` and `<!-- /crate-graph -->` must name, for
//! every library and binary crate of `crates/`, exactly its normal
//! dependencies among the workspace's crates (as `cargo metadata` reads them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cargo;

const START: &str = "<!-- crate-graph -->";
const END: &str = "<!-- /crate-graph -->";

/// `crate → its workspace dependencies`, as the document states it.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Parses lines `- `a` → `b`, `c`` (or `- `a` → nothing`) between the markers.
pub(crate) fn stated(doc: &str) -> Result<Graph> {
    let start = doc.find(START).with_context(|| format!("ARCHITECTURE.md has no {START} marker"))?;
    let end = doc.find(END).with_context(|| format!("ARCHITECTURE.md has no {END} marker"))?;
    let mut graph = Graph::new();
    for line in doc[start + START.len()..end].lines().map(str::trim).filter(|l| l.starts_with("- ")) {
        let (from, to) =
            line[2..].split_once('→').with_context(|| format!("ARCHITECTURE.md code map: no `→` in {line:?}"))?;
        let name = |s: &str| s.trim().trim_matches('`').trim().to_owned();
        let deps = if to.trim() == "nothing" {
            BTreeSet::new()
        } else {
            to.split(',').map(name).filter(|d| !d.is_empty()).collect()
        };
        graph.insert(name(from), deps);
    }
    Ok(graph)
}

/// The workspace crates under `crates/` and their normal dependencies on
/// each other (dev-dependencies and build-dependencies excluded).
fn actual(root: &Path) -> Result<Graph> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let packages = meta["packages"].as_array().context("cargo metadata: no packages")?;
    let crates_dir = root.join("crates");
    let ours: BTreeSet<&str> = packages
        .iter()
        .filter(|p| p["manifest_path"].as_str().is_some_and(|m| Path::new(m).starts_with(&crates_dir)))
        .filter_map(|p| p["name"].as_str())
        .collect();
    let mut graph = Graph::new();
    for p in packages {
        let Some(name) = p["name"].as_str().filter(|n| ours.contains(n)) else { continue };
        if name == "rrq-test-support" {
            continue;
        }
        let deps = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| ours.contains(d))
            .map(str::to_owned)
            .collect();
        graph.insert(name.to_owned(), deps);
    }
    Ok(graph)
}

/// Every difference between the stated and the real graph, as a sentence.
pub(crate) fn compare(stated: &Graph, actual: &Graph) -> Vec<String> {
    let mut broken = Vec::new();
    for (krate, deps) in actual {
        match stated.get(krate) {
            None => broken.push(format!("ARCHITECTURE.md: code map: {krate} is missing (it depends on {deps:?})")),
            Some(said) if said != deps => {
                let missing: Vec<_> = deps.difference(said).collect();
                let extra: Vec<_> = said.difference(deps).collect();
                broken.push(format!(
                    "ARCHITECTURE.md: code map: {krate} really depends on {deps:?} (not drawn: {missing:?}; drawn but absent: {extra:?})"
                ));
            }
            Some(_) => {}
        }
    }
    for krate in stated.keys().filter(|k| !actual.contains_key(*k)) {
        broken.push(format!("ARCHITECTURE.md: code map: {krate} is not a crate of crates/"));
    }
    broken
}

pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    Ok(compare(&stated(&doc)?, &actual(root)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges.iter().map(|(k, v)| ((*k).to_owned(), v.iter().map(|d| (*d).to_owned()).collect())).collect()
    }

    #[test]
    fn the_stated_graph_is_read_between_the_markers() {
        let doc = format!(
            "intro\n- `x` → `y`\n{START}\n- `rrq-core` → `rrq-pool`, `rrq-store`\n- `rrq-protocol` → nothing\n{END}\n"
        );
        assert_eq!(stated(&doc).unwrap(), graph(&[("rrq-core", &["rrq-pool", "rrq-store"]), ("rrq-protocol", &[])]));
        assert!(stated("no markers").is_err());
    }

    #[test]
    fn a_missing_or_invented_edge_is_named() {
        let real = graph(&[("rrq-core", &["rrq-pool", "rrq-store"]), ("rrq-protocol", &[])]);
        assert!(compare(&real, &real).is_empty());
        let drawn = graph(&[("rrq-core", &["rrq-pool", "rrq-runner"]), ("rrq-protocol", &[]), ("rrq-old", &[])]);
        let broken = compare(&drawn, &real);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(
            broken[0].contains("not drawn: [\"rrq-store\"]")
                && broken[0].contains("drawn but absent: [\"rrq-runner\"]")
        );
        assert!(broken[1].contains("rrq-old"));
        let missing = compare(&graph(&[("rrq-protocol", &[])]), &real);
        assert!(missing[0].contains("rrq-core is missing"), "{missing:?}");
    }
}
