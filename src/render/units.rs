//! Human-readable sizes, rates and durations: they live in [`crate::units`]
//! (below `analysis`, which formats its sentences with them); long text
//! made short is rendering's own.

pub use crate::units::*;

/// `s` in at most `max` characters: whole when it fits, else cut at the
/// last space that keeps at least half of it and marked with ` …`, so a
/// command line never ends in half a word (a single word longer than that
/// is cut inside, still marked).
pub fn clip_words(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(2);
    let head: String = s.chars().take(keep + 1).collect();
    // The character just past `keep` tells whether the cut falls between
    // words already.
    let (head, next) = match head.char_indices().nth(keep) {
        Some((i, c)) => (&head[..i], Some(c)),
        None => (head.as_str(), None),
    };
    let cut = if next.is_some_and(char::is_whitespace) {
        head
    } else {
        match head.rfind(char::is_whitespace) {
            Some(i) if head[..i].chars().count() >= keep / 2 => &head[..i],
            _ => head,
        }
    };
    format!("{} …", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_at_word_boundaries() {
        assert_eq!(clip_words("python3 app.py", 20), "python3 app.py");
        let cmd = "python3 -u /tmp/x/service.py --scenario sysv-shm --rate 5";
        let c = clip_words(cmd, 45);
        assert_eq!(c, "python3 -u /tmp/x/service.py --scenario …");
        assert!(c.chars().count() <= 45);
        // The cut lands right before a space: the whole word stays.
        assert_eq!(clip_words("aaaa bbbb cccc", 11), "aaaa bbbb …");
        // One long word: cut inside it, still marked.
        let long = format!("python3 {}", "x".repeat(200));
        let c = clip_words(&long, 50);
        assert_eq!(c.chars().count(), 50);
        assert!(c.ends_with("x …") && c.starts_with("python3 xx"), "{c}");
        // Multi-byte text is cut on character boundaries.
        let c = clip_words(&"é".repeat(30), 10);
        assert_eq!(c, format!("{} …", "é".repeat(8)));
    }
}
