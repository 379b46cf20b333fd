//! "Did you mean" suggestions for misspelled keys.

/// The candidate closest to `word` by edit distance, if it is close enough to
/// be a plausible misspelling.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["default_queue_name", "redis_dsn", "pool_size"];
        assert_eq!(closest("defualt_queue_name", &keys), Some("default_queue_name"));
        assert_eq!(closest("redis_url", &keys), Some("redis_dsn"));
        assert_eq!(closest("completely_else", &keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
