//! A check over the Lua sources: every key a script touches arrives in KEYS.
//!
//! On Redis Cluster a script may only touch keys of the slot its KEYS hash
//! to, so a key built inside Lua from an ARGV value (`ARGV[8] .. id`) breaks
//! there even though it works on one node. Where a script learns a job id
//! only while it runs (claim pops ids from a queue), the key's *prefix* is a
//! KEYS entry instead; with a hash tag in the prefix every key shares a slot.
//!
//! The rules, applied to every `.lua` file beside the wrappers, `common.lua`
//! included (comments stripped; which helper parameters take keys is read
//! from the helpers' definitions in `common.lua` and in the script):
//! 1. no string literal names an RRQ key (`'rrq:…'`);
//! 2. no ARGV value heads a concatenation (`ARGV[n] .. id`, or `x .. id`
//!    where the local `x` was bound from ARGV); further on in a chain it is
//!    text in a message;
//! 3. no ARGV value is the key argument of `redis.call` / `redis.pcall`
//!    (pub/sub channels are not keys: `PUBLISH`'s argument is exempt, and
//!    so is `SPUBLISH`'s, a shard channel named with its shard's hash tag);
//! 4. no ARGV value is passed where a helper takes a key (a parameter named
//!    `key`, `prefix`, `…_key` or `…_prefix`);
//! 5. every local named `…_prefix` is bound from KEYS.

use std::collections::{BTreeMap, BTreeSet};

/// Commands whose first argument is not a key.
const KEYLESS: &[&str] = &["PUBLISH", "SPUBLISH", "TIME"];

/// One file's problems, as `file: line: rule`.
pub(super) fn check(file: &str, common: &str, source: &str) -> Vec<String> {
    let common = strip_comments(common);
    let text = strip_comments(source);
    let mut out = Vec::new();
    let mut key_params: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for body in [&common, &text] {
        for (name, params) in functions(body) {
            let keys = params.iter().enumerate().filter(|(_, p)| is_key_name(p)).map(|(i, _)| i).collect();
            key_params.insert(name, keys);
        }
    }
    let argv_bound = bound_locals(&text, "ARGV[");
    let keys_bound = bound_locals(&text, "KEYS[");
    // Whether a key expression starts from an ARGV value (`ARGV[6] .. id`,
    // or a local bound from ARGV); `job_prefix .. id` with an ARGV id is fine.
    let is_argv = |expr: &str| {
        let head = expr.split("..").next().unwrap_or_default();
        head.contains("ARGV[") || idents(head).any(|i| argv_bound.contains(i))
    };
    for (n, line) in text.lines().enumerate() {
        let at = |rule: &str| format!("{file}:{}: {rule}: {}", n + 1, line.trim());
        if line.contains("'rrq:") || line.contains("\"rrq:") {
            out.push(at("a literal key name"));
        }
        for (pos, _) in line.match_indices("..") {
            let (before, operand) = left_operand(&line[..pos]);
            // Only the head of a chain builds a name (`prefix .. id`); an
            // ARGV value further on is text in a message.
            if !before.trim_end().ends_with("..") && is_argv(operand) {
                out.push(at("an ARGV value at the head of a concatenation"));
            }
        }
        for (callee, args) in calls(line) {
            if callee == "redis.call" || callee == "redis.pcall" {
                let cmd = args.first().map(|a| a.trim_matches(|c| c == '\'' || c == '"').to_ascii_uppercase());
                if let (Some(cmd), Some(key)) = (cmd, args.get(1))
                    && !KEYLESS.contains(&cmd.as_str())
                    && is_argv(key)
                {
                    out.push(at("an ARGV value used as a key"));
                }
            } else if let Some(positions) = key_params.get(callee)
                && positions.iter().any(|&i| args.get(i).is_some_and(|a| is_argv(a)))
            {
                out.push(at("an ARGV value passed as a key"));
            }
        }
    }
    for name in bound_names(&text) {
        if name.ends_with("_prefix") && !keys_bound.contains(&name) {
            out.push(format!("{file}: `{name}` is not bound from KEYS"));
        }
    }
    out
}

/// The operand ending `left` (a name, possibly indexed: `ARGV[a + 5]`) and
/// what comes before it.
fn left_operand(left: &str) -> (&str, &str) {
    let left = left.trim_end();
    let mut start = left.len();
    if left.ends_with(']') {
        let mut depth = 0;
        for (i, c) in left.char_indices().rev() {
            match c {
                ']' => depth += 1,
                '[' => {
                    depth -= 1;
                    if depth == 0 {
                        start = i;
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let head = left[..start].rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
    (&left[..head], &left[head..])
}

fn is_key_name(p: &str) -> bool {
    p == "key" || p == "prefix" || p.ends_with("_key") || p.ends_with("_prefix")
}

/// The source without `--` comments (string contents are kept).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let mut quote = None;
        let mut cut = line.len();
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match quote {
                Some(q) if b == q && (i == 0 || bytes[i - 1] != b'\\') => quote = None,
                Some(_) => {}
                None if b == b'\'' || b == b'"' => quote = Some(b),
                None if b == b'-' && bytes.get(i + 1) == Some(&b'-') => {
                    cut = i;
                    break;
                }
                None => {}
            }
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn idents(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|s| !s.is_empty())
}

/// Every `local a, b = x, y` on one line: (name, expression) pairs.
fn locals(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("local ") else { continue };
        if rest.starts_with("function") {
            continue;
        }
        let (names, exprs) = match rest.split_once('=') {
            Some((n, e)) if !e.starts_with('=') => (n, split_args(e)),
            _ => (rest, Vec::new()),
        };
        for (i, name) in names.split(',').map(str::trim).enumerate() {
            out.push((name.to_owned(), exprs.get(i).cloned().unwrap_or_default()));
        }
    }
    out
}

fn bound_names(text: &str) -> BTreeSet<String> {
    locals(text).into_iter().map(|(n, _)| n).collect()
}

/// Locals whose expression reads `source` (`"ARGV["` or `"KEYS["`).
fn bound_locals(text: &str, source: &str) -> BTreeSet<String> {
    locals(text).into_iter().filter(|(_, e)| e.contains(source)).map(|(n, _)| n).collect()
}

/// `local function name(a, b)` definitions: name and parameter names.
fn functions(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("local function ")?;
            let (name, params) = rest.split_once('(')?;
            let params = params.split_once(')')?.0;
            Some((name.trim().to_owned(), params.split(',').map(|p| p.trim().to_owned()).collect()))
        })
        .collect()
}

/// Calls on one line: callee and its top-level arguments (a call whose
/// arguments continue on the next line is read up to the line's end).
fn calls(line: &str) -> Vec<(&str, Vec<String>)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'(' {
            continue;
        }
        let start = line[..i].rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).map_or(0, |p| p + 1);
        let callee = &line[start..i];
        if callee.is_empty() || callee.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            continue;
        }
        let (mut depth, mut end) = (0usize, line.len());
        for (j, c) in line[i..].char_indices() {
            match c {
                '(' | '{' => depth += 1,
                ')' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + j;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((callee, split_args(&line[i + 1..end])));
    }
    out
}

/// Splits at top-level commas (outside parentheses, braces and strings).
fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, None);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::check;

    const COMMON: &str = "local function get_string(key)\n  return redis.call('GET', key)\nend\n\
        local function full_name(name, prefix, fallback_key)\n  return prefix .. name\nend\n";

    #[test]
    fn every_script_takes_its_keys_from_keys() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/redis/scripts");
        let common = std::fs::read_to_string(format!("{dir}/common.lua")).unwrap();
        let mut problems = Vec::new();
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "lua") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let source = std::fs::read_to_string(&path).unwrap();
                // common.lua is checked as a script of its own as well.
                problems.extend(check(&name, &common, &source));
                files += 1;
            }
        }
        assert!(files > 10, "the scripts were found ({files})");
        assert!(problems.is_empty(), "keys built outside KEYS:\n{}", problems.join("\n"));
    }

    #[test]
    fn keys_built_from_argv_are_caught() {
        let bad = [
            ("literal", "redis.call('DEL', 'rrq:job:' .. KEYS[1])"),
            ("concat", "redis.call('EXISTS', ARGV[6] .. id)"),
            ("indexed", "local k = ARGV[a + 6] .. id"),
            ("head", "local k = ARGV[2] .. 'x'"),
            ("alias", "local job_prefix = ARGV[8]\nlocal k = job_prefix .. id"),
            ("key arg", "redis.call('ZADD', ARGV[9], 1, id)"),
            ("helper", "local q = full_name(x, ARGV[8], KEYS[2])"),
            ("helper fallback", "local q = full_name(x, KEYS[3], ARGV[9])"),
            ("prefix", "local lock_prefix = 'x'"),
        ];
        for (what, src) in bad {
            assert!(!check(what, COMMON, src).is_empty(), "{what} was not caught: {src}");
        }
        let good = "local job_prefix, q = KEYS[3], KEYS[2]\nlocal id = ARGV[1]\n\
            redis.call('EXISTS', job_prefix .. id) -- ARGV[1] .. x\nredis.call('PUBLISH', ARGV[5], q)\n\
            local s = 'x' .. ARGV[2] .. ')'\nlocal n = full_name(ARGV[3], job_prefix, q)";
        assert_eq!(check("good", COMMON, good), Vec::<String>::new());
    }
}
