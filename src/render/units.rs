//! Human-readable sizes, rates and durations (and long text made short).

/// 1536 → "1.5 KiB"; binary units like pmap and top.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Compact form for table columns: "25.8M", "64K", "512".
pub fn bytes_short(n: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    if n < 1024 {
        return n.to_string();
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// A signed byte delta: "+1.5 MiB", "-64 KiB", "0 B".
pub fn bytes_delta(d: i64) -> String {
    match d {
        0 => "0 B".to_string(),
        d if d > 0 => format!("+{}", bytes(d as u64)),
        d => format!("-{}", bytes(d.unsigned_abs())),
    }
}

/// Short signed delta for columns: "+25.8M", "-64K", "0".
pub fn bytes_delta_short(d: i64) -> String {
    match d {
        0 => "0".to_string(),
        d if d > 0 => format!("+{}", bytes_short(d as u64)),
        d => format!("-{}", bytes_short(d.unsigned_abs())),
    }
}

/// A byte rate: "+610 KiB/s".
pub fn rate(bytes_per_s: f64) -> String {
    if !bytes_per_s.is_finite() {
        return "?".into();
    }
    format!("{}/s", bytes_delta(bytes_per_s.round() as i64))
}

/// Seconds → "3d4h", "2h05m", "4m10s", "12s".
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs as u64;
    let (d, h, m, sec) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else if secs < 10.0 && secs.fract() != 0.0 {
        format!("{secs:.1}s")
    } else {
        format!("{sec}s")
    }
}

/// Signed delta of two unsigned counters.
pub fn delta(new: u64, old: u64) -> i64 {
    (new as i128 - old as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

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

    #[test]
    fn formats_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 * 1024), "64.0 KiB");
        assert_eq!(bytes(412 * 64 * 1024), "25.8 MiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
        assert_eq!(bytes_short(64 * 1024), "64K");
        assert_eq!(bytes_short(412 * 64 * 1024), "25.8M");
        assert_eq!(bytes_delta(-65536), "-64.0 KiB");
        assert_eq!(bytes_delta_short(0), "0");
        assert_eq!(delta(0, u64::MAX), i64::MIN);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(duration(12.0), "12s");
        assert_eq!(duration(2.5), "2.5s");
        assert_eq!(duration(250.0), "4m10s");
        assert_eq!(duration(7500.0), "2h05m");
        assert_eq!(duration(90000.0), "1d1h");
        assert_eq!(duration(f64::NAN), "?");
    }
}
