//! Keys that landed in the wrong table.
//!
//! In TOML every `key = value` line belongs to the last `[header]` above it,
//! so a key written after `[rrq.runners.python.env]` lands in that table even
//! when it was meant for `[rrq.runners.python]`. Type errors and "unknown
//! key" messages then point at the symptom; these checks name the table the
//! key landed in and the one it belongs to.

use crate::raw::{CRON_KEYS, RRQ_KEYS, RUNNER_KEYS, WATCH_KEYS};
use crate::{Error, Warning};

/// Checks the tables under `[rrq]` (`root` is `rrq`, or `<root>` for a
/// file without an `[rrq]` table) for keys of an enclosing table. A key
/// whose value the sub-table cannot hold is an error; one it can hold (a
/// string in an environment table) is a warning, since the file loads.
pub(crate) fn check(table: &toml::Table, root: &str, warnings: &mut Vec<Warning>) -> Result<(), Error> {
    let at = Place { root };
    if let Some(toml::Value::Table(runners)) = table.get("runners") {
        let sub = at.sub("runners");
        for (name, value) in runners {
            let toml::Value::Table(runner) = value else {
                if RRQ_KEYS.contains(&name.as_str()) {
                    return Err(at.misplaced(&sub, name, value, "which holds one table per runner", None));
                }
                continue;
            };
            let runner_path = at.sub(&format!("runners.{name}"));
            for (key, value) in runner {
                if !RUNNER_KEYS.contains(&key.as_str()) && RRQ_KEYS.contains(&key.as_str()) {
                    return Err(at.misplaced(&runner_path, key, value, "which takes only runner keys", None));
                }
            }
            let Some(toml::Value::Table(env)) = runner.get("env") else { continue };
            let env_path = at.sub(&format!("runners.{name}.env"));
            for (key, value) in env {
                let parent = if RUNNER_KEYS.contains(&key.as_str()) && key != "env" {
                    Some(runner_path.as_str())
                } else if RRQ_KEYS.contains(&key.as_str()) {
                    None
                } else {
                    continue;
                };
                let what = "whose values must be strings (environment variables)";
                if value.is_str() {
                    let note = format!("it is passed to the runner as the environment variable `{key}`");
                    warnings.push(Warning(at.message(&env_path, key, what, parent, &note)));
                } else {
                    return Err(at.misplaced(&env_path, key, value, what, parent));
                }
            }
        }
    }
    for (name, what, note) in [
        ("runner_routes", "whose values must be runner names (queue = \"runner\")", "it is read as a route"),
        ("routing", "whose values must be runner names (queue = \"runner\")", "it is read as a route"),
        (
            "correlation_mappings",
            "whose values must be params paths (attribute = \"path\")",
            "it is read as a correlation mapping",
        ),
    ] {
        let Some(toml::Value::Table(sub)) = table.get(name) else { continue };
        let path = at.sub(name);
        for (key, value) in sub.iter().filter(|(k, _)| RRQ_KEYS.contains(&k.as_str())) {
            if value.is_str() {
                warnings.push(Warning(at.message(&path, key, what, None, note)));
            } else {
                return Err(at.misplaced(&path, key, value, what, None));
            }
        }
    }
    if let Some(toml::Value::Table(watch)) = table.get("watch") {
        let path = at.sub("watch");
        for key in watch.keys().filter(|k| !WATCH_KEYS.contains(&k.as_str()) && RRQ_KEYS.contains(&k.as_str())) {
            let what = "which takes only watch keys";
            warnings.push(Warning(at.message(&path, key, what, None, "it is ignored there")));
        }
    }
    for list in ["cron_jobs", "cron"] {
        let Some(toml::Value::Array(entries)) = table.get(list) else { continue };
        for (i, entry) in entries.iter().enumerate() {
            let toml::Value::Table(entry) = entry else { continue };
            let path = format!("[[{}]] entry {i}", at.sub(list));
            for key in entry.keys().filter(|k| !CRON_KEYS.contains(&k.as_str()) && RRQ_KEYS.contains(&k.as_str())) {
                let what = "which takes only cron entry keys";
                warnings.push(Warning(at.message_in(&path, key, what, None, "it is ignored there")));
            }
        }
    }
    Ok(())
}

/// Whether a key of a sub-table is one of `[rrq]`'s own, so the unknown-key
/// warnings can leave it to [`check`].
pub(crate) fn is_rrq_key(key: &str) -> bool {
    RRQ_KEYS.contains(&key)
}

/// Table paths under the configuration's root table.
struct Place<'a> {
    root: &'a str,
}

impl Place<'_> {
    /// The dotted path of a sub-table, as its header spells it.
    fn sub(&self, rest: &str) -> String {
        if self.root == "rrq" { format!("rrq.{rest}") } else { rest.to_owned() }
    }

    /// Where a key of the root table goes.
    fn root_fix(&self) -> String {
        if self.root == "rrq" {
            "it belongs in [rrq]: move it under the [rrq] header, above any [rrq.…] table".to_owned()
        } else {
            "it belongs at the top level: move it above the first [table] header".to_owned()
        }
    }

    /// The message for `key` found in the table `[sub]`, whose parent
    /// `parent` (the root table when `None`) it belongs to.
    fn message(&self, sub: &str, key: &str, what: &str, parent: Option<&str>, note: &str) -> String {
        self.message_in(&format!("[{sub}]"), key, what, parent.map(|p| (p, sub)), note)
    }

    fn message_in(&self, place: &str, key: &str, what: &str, parent: Option<(&str, &str)>, note: &str) -> String {
        let fix = match parent {
            Some((parent, sub)) => format!("it belongs in [{parent}]: move it above the [{sub}] header"),
            None => self.root_fix(),
        };
        if note.is_empty() {
            format!("`{key}` is in {place}, {what}; {fix}")
        } else {
            format!("`{key}` is in {place}, {what}; {fix} ({note})")
        }
    }

    fn misplaced(&self, sub: &str, key: &str, value: &toml::Value, what: &str, parent: Option<&str>) -> Error {
        Error::Invalid {
            key: format!("{sub}.{key}"),
            value: value.to_string(),
            reason: self.message(sub, key, what, parent, ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, parse};

    fn err(doc: &str) -> String {
        match parse(doc) {
            Err(e @ Error::Invalid { .. }) => e.to_string(),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    fn warnings(doc: &str) -> Vec<String> {
        parse(doc).expect("loads").1.into_iter().map(|w| w.0).collect()
    }

    #[test]
    fn a_runner_key_after_the_env_header_names_both_tables() {
        let doc = "[rrq.runners.python]\ncmd = [\"x\"]\ntcp_port = 9000\n\n[rrq.runners.python.env]\nPYTHONPATH = \".\"\nresponse_timeout_seconds = 300.0\n";
        let msg = err(doc);
        assert!(
            msg.contains(
                "`response_timeout_seconds` is in [rrq.runners.python.env], whose values must be strings \
                 (environment variables); it belongs in [rrq.runners.python]: move it above the \
                 [rrq.runners.python.env] header"
            ),
            "{msg}"
        );
        assert!(!msg.contains("invalid type"), "the hint replaces the type error: {msg}");
    }

    #[test]
    fn an_rrq_key_inside_a_runner_env_belongs_in_rrq() {
        let doc = "[rrq]\n[rrq.runners.p]\ncmd = [\"x\"]\ntcp_port = 9000\n[rrq.runners.p.env]\ndefault_job_timeout_seconds = 60\n";
        let msg = err(doc);
        assert!(msg.contains("`default_job_timeout_seconds` is in [rrq.runners.p.env]"), "{msg}");
        assert!(msg.contains("it belongs in [rrq]: move it under the [rrq] header, above any [rrq.…] table"), "{msg}");
    }

    #[test]
    fn a_string_runner_key_in_env_loads_with_a_warning() {
        let doc = "[rrq.runners.p]\ncmd = [\"x\"]\ntcp_port = 9000\n[rrq.runners.p.env]\ncwd = \"/srv/app\"\n";
        let (s, w) = parse(doc).expect("a string is a valid environment value");
        assert_eq!(s.runners["p"].env["cwd"], "/srv/app", "kept as the reference keeps it");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].0.contains("`cwd` is in [rrq.runners.p.env]") && w[0].0.contains("[rrq.runners.p]"), "{}", w[0]);
    }

    #[test]
    fn an_rrq_key_inside_a_runner_table_belongs_in_rrq() {
        let doc = "[rrq.runners.p]\ncmd = [\"x\"]\ntcp_port = 9000\ndefault_runner_name = \"p\"\n";
        let msg = err(doc);
        assert!(msg.contains("`default_runner_name` is in [rrq.runners.p], which takes only runner keys"), "{msg}");
        assert!(msg.contains("it belongs in [rrq]"), "{msg}");
    }

    #[test]
    fn an_rrq_key_directly_under_the_runners_table_belongs_in_rrq() {
        let doc = "[rrq.runners]\ndefault_runner_name = \"p\"\n";
        let msg = err(doc);
        assert!(msg.contains("`default_runner_name` is in [rrq.runners], which holds one table per runner"), "{msg}");
        assert!(msg.contains("it belongs in [rrq]"), "{msg}");
    }

    #[test]
    fn rrq_keys_after_routes_or_mappings_are_refused_or_warned_by_type() {
        let msg = err("[rrq.runner_routes]\nemails = \"py\"\ndefault_max_retries = 3\n");
        assert!(
            msg.contains("`default_max_retries` is in [rrq.runner_routes], whose values must be runner names"),
            "{msg}"
        );
        assert!(msg.contains("it belongs in [rrq]: move it under the [rrq] header"), "{msg}");
        let w = warnings("[rrq.runner_routes]\nemails = \"py\"\ndefault_runner_name = \"py\"\n");
        assert!(w.iter().any(|w| w.contains("`default_runner_name` is in [rrq.runner_routes]")), "{w:?}");
        let msg = err("[rrq.correlation_mappings]\ntenant = \"t.id\"\nlease_ttl_seconds = 5\n");
        assert!(msg.contains("`lease_ttl_seconds` is in [rrq.correlation_mappings]"), "{msg}");
    }

    #[test]
    fn rrq_keys_after_a_cron_entry_or_watch_warn_where_they_belong() {
        let doc = "[[rrq.cron_jobs]]\nfunction_name = \"f\"\nschedule = \"@daily\"\nredis_dsn = \"redis://elsewhere:6379/0\"\n";
        let w = warnings(doc);
        assert_eq!(w.len(), 1, "one warning, not an unknown-key one besides: {w:?}");
        assert!(
            w[0].contains("`redis_dsn` is in [[rrq.cron_jobs]] entry 0")
                && w[0].contains("it belongs in [rrq]")
                && w[0].contains("ignored"),
            "{}",
            w[0]
        );
        let w = warnings("[rrq.watch]\npath = \".\"\ndefault_queue_name = \"q\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("`default_queue_name` is in [rrq.watch]") && w[0].contains("[rrq]"), "{}", w[0]);
    }

    #[test]
    fn files_without_an_rrq_table_point_at_the_top_of_the_file() {
        let msg = err("[runners.p]\ncmd = [\"x\"]\ntcp_port = 9000\n[runners.p.env]\nmax_in_flight = 2\n");
        assert!(msg.contains("`max_in_flight` is in [runners.p.env]") && msg.contains("[runners.p]"), "{msg}");
    }

    #[test]
    fn ordinary_sub_table_values_pass() {
        let doc = "[rrq.runners.p]\ncmd = [\"x\"]\ntcp_port = 9000\n[rrq.runners.p.env]\nPATH = \"/bin\"\n[rrq.runner_routes]\nmail = \"p\"\n";
        let (_, w) = parse(doc).unwrap();
        assert!(w.is_empty(), "{w:?}");
    }
}
