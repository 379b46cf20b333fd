//! `rrq debug clear`: delete the keys matching a pattern, after counting
//! them and asking.

use serde_json::json;

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::output::OutputArgs;

/// `rrq debug clear` options.
#[derive(Debug, clap::Args)]
pub struct ClearArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Delete without asking (required for `*` or an empty pattern)
    #[arg(long)]
    confirm: bool,
    /// Redis glob over full key names, applied as given (not limited to rrq:)
    #[arg(long, default_value = "test_*")]
    pattern: String,
}

pub(super) async fn run(args: ClearArgs) -> Result<Exit, CliError> {
    let pattern = args.pattern.as_str();
    if !args.confirm && (pattern.is_empty() || pattern.chars().all(|c| c == '*')) {
        return Err(ops::usage(format!(
            "--pattern {pattern:?} matches every key of the database; pass --confirm to delete them all"
        )));
    }
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let found = store.delete_matching(pattern, true).await?;
    let report = |matched: u64, deleted: u64| {
        crate::output::print_json(&json!({"pattern": pattern, "matched": matched, "deleted": deleted}));
    };
    if found == 0 {
        if args.out.json {
            report(0, 0);
        } else {
            outln!("No keys found matching pattern: {pattern}");
        }
        return Ok(Exit::Ok);
    }
    if !args.out.json {
        outln!("Found {found} keys matching pattern: {pattern}");
    }
    if !ops::confirm_with(&format!("Delete {found} keys?"), args.confirm, "--confirm")? {
        if args.out.json {
            report(found, 0);
        } else {
            outln!("Deletion cancelled");
        }
        return Ok(Exit::Ok);
    }
    let deleted = store.delete_matching(pattern, false).await?;
    if args.out.json {
        report(found, deleted);
    } else if deleted > 0 {
        outln!("Deleted {deleted} keys");
    }
    Ok(Exit::Ok)
}
