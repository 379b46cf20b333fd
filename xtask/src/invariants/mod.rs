//! `cargo xtask invariants`: the rules ARCHITECTURE.md states, each checked
//! by a machine. The crate-graph rules read `cargo tree` (`graph`), the code
//! map is compared with `cargo metadata` (`code_map`), and the source rules
//! scan the workspace's Rust files (`source`), naming the file and line of
//! every break.

mod code_map;
mod graph;
mod source;

use anyhow::{Result, bail};

pub(crate) fn check() -> Result<()> {
    let mut broken = graph::check()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    broken.extend(code_map::check(&root)?);
    let found = source::check(&root)?;
    broken.extend(found.iter().map(ToString::to_string));
    if broken.is_empty() {
        eprintln!(
            "invariants: {} hold (crate graph; the code map of ARCHITECTURE.md; {})",
            graph::RULES + 1 + source::RULES.len(),
            source::RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
        );
        Ok(())
    } else {
        let rules = source::RULES.iter().map(|r| format!("{}: {}", r.name, r.what)).collect::<Vec<_>>();
        bail!(
            "{} invariant(s) broken (ARCHITECTURE.md, \"Invariants\"):\n  {}\nthe source rules:\n  {}",
            broken.len(),
            broken.join("\n  "),
            rules.join("\n  ")
        )
    }
}
