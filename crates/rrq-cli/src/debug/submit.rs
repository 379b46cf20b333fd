//! `rrq debug submit`: enqueue one job, with the reference's `--args` and
//! `--kwargs` spelling of its params.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::ConfigArgs;
use crate::enqueue::{self, Submission, producer};
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::output::OutputArgs;
use crate::queue::queue_arg;

/// `rrq debug submit` options.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The handler to run
    function: String,
    /// Positional arguments, a JSON array (stored as params.args)
    #[arg(long)]
    args: Option<String>,
    /// The params, a JSON object
    #[arg(long)]
    kwargs: Option<String>,
    /// Target queue (default: default_queue_name)
    #[arg(long)]
    queue: Option<String>,
    /// Seconds to defer the job by
    #[arg(long)]
    delay: Option<u64>,
}

/// The params of `debug submit`: `--kwargs` (a JSON object) with `--args`
/// (a JSON array) as `params.args`.
fn submit_params(args: Option<&str>, kwargs: Option<&str>) -> Result<Map<String, Value>, CliError> {
    let mut params = enqueue::params_arg(kwargs, "--kwargs")?;
    if let Some(raw) = args {
        let value: Value =
            serde_json::from_str(raw).map_err(|e| ops::usage(format!("--args must be valid JSON array: {e}")))?;
        if !value.is_array() {
            return Err(ops::usage("--args must be a JSON array".to_owned()));
        }
        if params.contains_key("args") {
            return Err(ops::usage("--args conflicts with kwargs key 'args'".to_owned()));
        }
        params.insert("args".to_owned(), value);
    }
    Ok(params)
}

pub(super) async fn run(args: SubmitArgs) -> Result<Exit, CliError> {
    enqueue::function_arg(&args.function)?;
    let params = submit_params(args.args.as_deref(), args.kwargs.as_deref())?;
    let queue = args.queue.as_deref().map(|q| queue_arg(q, "--queue")).transpose()?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let submission = Submission {
        function: args.function.clone(),
        params,
        queue,
        defer: args.delay.map(Duration::from_secs),
        unique_key: None,
    };
    let done = enqueue::submit(&producer(store, &settings), &settings, &submission).await?;
    if args.out.json {
        crate::output::print_json(&json!({
            "job_id": done.id.as_str(),
            "function": args.function,
            "queue": done.queue.as_str(),
            "params": submission.params,
            "delay_seconds": args.delay.unwrap_or(0),
        }));
    } else {
        outln!("Job submitted: {}", done.id);
        outln!("Function: {}", args.function);
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_params_put_args_under_params_args() {
        let p = submit_params(Some("[1,2]"), Some(r#"{"k":1}"#)).unwrap();
        assert_eq!(Value::Object(p), json!({"k": 1, "args": [1, 2]}));
        assert_eq!(Value::Object(submit_params(None, None).unwrap()), json!({}));
        let err = |a: Option<&str>, k: Option<&str>| submit_params(a, k).unwrap_err().error.to_string();
        assert!(err(Some("[1,"), None).starts_with("--args must be valid JSON array: "));
        assert_eq!(err(Some(r#"{"a":1}"#), None), "--args must be a JSON array");
        assert_eq!(err(Some("[1]"), Some(r#"{"args":0}"#)), "--args conflicts with kwargs key 'args'");
        assert!(err(None, Some("{oops")).starts_with("--kwargs must be a valid JSON object: "));
        assert_eq!(err(None, Some("[1]")), "--kwargs must be a JSON object");
    }
}
