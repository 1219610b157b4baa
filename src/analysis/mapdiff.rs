//! Comparing two grouped reads of a process's mappings.

use serde::Serialize;
use std::collections::BTreeMap;

use super::groups::{Backing, Group};
use crate::units::delta;

#[derive(Debug, Clone, Serialize)]
pub struct GroupChange {
    pub change: &'static str,
    pub label: String,
    pub backing: Backing,
    pub mappings_before: usize,
    pub mappings_after: usize,
    pub size_before: u64,
    pub size_after: u64,
    pub rss_before: u64,
    pub rss_after: u64,
}

/// RSS moves by a few pages all the time; smaller moves with no change of
/// mappings or size are not reported.
const RSS_NOISE: u64 = 64 * 1024;

/// Groups that appeared, vanished, grew or shrank, biggest change first.
pub fn compare(before: &[Group], after: &[Group]) -> Vec<GroupChange> {
    let old: BTreeMap<&Backing, &Group> = before.iter().map(|g| (&g.backing, g)).collect();
    let new: BTreeMap<&Backing, &Group> = after.iter().map(|g| (&g.backing, g)).collect();
    let change = |kind, g: &Group, b: Option<&Group>, a: Option<&Group>| GroupChange {
        change: kind,
        label: g.label.clone(),
        backing: g.backing.clone(),
        mappings_before: b.map_or(0, |g| g.mappings),
        mappings_after: a.map_or(0, |g| g.mappings),
        size_before: b.map_or(0, |g| g.size),
        size_after: a.map_or(0, |g| g.size),
        rss_before: b.map_or(0, |g| g.rss),
        rss_after: a.map_or(0, |g| g.rss),
    };
    let mut changes = Vec::new();
    for (key, a) in &new {
        match old.get(key) {
            None => changes.push(change("appeared", a, None, Some(a))),
            Some(b) => {
                let shape_moved = a.mappings != b.mappings || a.size != b.size;
                if shape_moved || a.rss.abs_diff(b.rss) >= RSS_NOISE {
                    let grew = delta(a.rss, b.rss)
                        + delta(a.size, b.size)
                        + delta(a.mappings as u64, b.mappings as u64)
                        >= 0;
                    changes.push(change(
                        if grew { "grew" } else { "shrank" },
                        a,
                        Some(b),
                        Some(a),
                    ));
                }
            }
        }
    }
    for (key, b) in &old {
        if !new.contains_key(key) {
            changes.push(change("vanished", b, Some(b), None));
        }
    }
    changes.sort_by_key(|c| {
        std::cmp::Reverse(
            delta(c.rss_after, c.rss_before).abs() + delta(c.size_after, c.size_before).abs() / 16,
        )
    });
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::groups::group;
    use crate::process::maps::parse_maps;

    #[test]
    fn reports_appeared_vanished_and_grown_groups() {
        let before = group(&parse_maps(
            b"1000-2000 rw-s 00000000 00:01 7 /SYSV00000000 (deleted)\n3000-4000 r--p 00000000 fe:01 9 /old\n",
        ));
        let after = group(&parse_maps(
            b"1000-2000 rw-s 00000000 00:01 7 /SYSV00000000 (deleted)\n2000-3000 rw-s 00000000 00:01 7 /SYSV00000000 (deleted)\n5000-6000 r--p 00000000 fe:01 10 /new\n",
        ));
        let changes = compare(&before, &after);
        let kinds: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.change, c.label.as_str()))
            .collect();
        assert!(kinds.contains(&("grew", "[ shmid=0x7 ] key 0x00000000")));
        assert!(kinds.contains(&("appeared", "/new")));
        assert!(kinds.contains(&("vanished", "/old")));
        assert!(compare(&after, &after).is_empty());
    }
}
