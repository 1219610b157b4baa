//! Text for `memsleuth maps`: the grouped view, the pmap-style raw view and
//! the diff. Pure functions, so they are snapshot-tested on fixtures.

use crate::analysis::groups::{Backing, Group};
use crate::analysis::mapdiff::GroupChange;
use crate::analysis::mapview::Totals;
use crate::process::maps::{Mapping, MemStats};
use crate::render::table::Table;
use crate::render::units::{bytes_delta_short, bytes_short, delta};

/// Groups shown by default; repeated mappings are always shown.
pub const DEFAULT_LIMIT: usize = 30;

/// The grouped table, totals and the repeated-mapping flags.
pub fn grouped(header: &str, groups: &[Group], totals: &Totals, all: bool) -> String {
    let mut out = format!("{header}\n");
    let mut table = Table::new(&[
        ("MAPS", true),
        ("SIZE", true),
        ("RSS", true),
        ("PSS", true),
        ("SWAP", true),
        ("KIND", false),
        ("BACKED BY", false),
    ]);
    let mut hidden = 0;
    for (i, g) in groups.iter().enumerate() {
        if !all && i >= DEFAULT_LIMIT && !g.is_repeated() {
            hidden += 1;
            continue;
        }
        let count = match g.backing {
            Backing::ThreadStacks => format!("{} stacks", g.units),
            Backing::GlibcArenas => format!("{} heaps", g.units),
            _ => g.mappings.to_string(),
        };
        table.row(vec![
            count,
            bytes_short(g.size),
            bytes_short(g.rss),
            bytes_short(g.pss),
            bytes_short(g.swap),
            kind_word(&g.backing).to_string(),
            g.label.clone(),
        ]);
    }
    out.push_str(&table.render());
    if hidden > 0 {
        out.push_str(&format!(
            "… {hidden} smaller groups not shown (use --all)\n"
        ));
    }
    out.push_str(&format!(
        "total: {} mappings, {} mapped, RSS {}, PSS {}, swap {}\n",
        totals.mappings,
        bytes_short(totals.size),
        bytes_short(totals.rss),
        bytes_short(totals.pss),
        bytes_short(totals.swap)
    ));
    let repeated: Vec<&Group> = groups.iter().filter(|g| g.is_repeated()).collect();
    if !repeated.is_empty() {
        out.push_str("\nMapped more than once by this process:\n");
        for g in &repeated {
            out.push_str(&format!("  ! {}\n", g.repeat_message()));
        }
        if repeated
            .iter()
            .any(|g| matches!(g.backing, Backing::Sysv { .. }))
        {
            out.push_str("    (a SysV segment attached again with shmat() and never shmdt()'d; see `memsleuth shm`)\n");
        }
    }
    out
}

pub fn kind_word(b: &Backing) -> &'static str {
    match b {
        Backing::Sysv { .. } => "sysv-shm",
        Backing::PosixShm { .. } => "posix-shm",
        Backing::Memfd { .. } => "memfd",
        Backing::SharedAnon { .. } => "shared-anon",
        Backing::File { .. } => "file",
        Backing::DeletedFile { .. } => "deleted",
        Backing::Heap => "heap",
        Backing::MainStack => "stack",
        Backing::ThreadStacks => "thread-stacks",
        Backing::GlibcArenas => "glibc-arenas",
        Backing::NamedAnon { .. } => "anon-named",
        Backing::Kernel { .. } => "kernel",
        Backing::Anonymous => "anon",
    }
}

/// `pmap -x` style: one line per mapping, sizes in KiB.
pub fn raw(header: &str, maps: &[Mapping], kinds: &[Backing]) -> String {
    let mut out = format!(
        "{header}\nAddress           Kbytes     RSS     PSS   Dirty    Swap Mode  Mapping\n"
    );
    let mut sum = MemStats::default();
    for (m, kind) in maps.iter().zip(kinds) {
        sum.add(&m.stats);
        // pmap's mode: the `p` of private shown as `-`, then a fifth `-`.
        let mut mode: Vec<u8> = m.perms.to_vec();
        if mode[3] == b'p' {
            mode[3] = b'-';
        }
        mode.push(b'-');
        let name = match kind {
            Backing::Sysv { shmid, .. } => format!("[ shmid=0x{shmid:x} ]"),
            Backing::Anonymous | Backing::GlibcArenas => "[ anon ]".into(),
            Backing::ThreadStacks => "[ anon ] (thread stack)".into(),
            Backing::MainStack => "[ stack ]".into(),
            _ => m.path.clone(),
        };
        out.push_str(&format!(
            "{:016x} {:>7} {:>7} {:>7} {:>7} {:>7} {} {}\n",
            m.start,
            m.size() / 1024,
            m.stats.rss / 1024,
            m.stats.pss / 1024,
            m.stats.dirty() / 1024,
            m.stats.swap / 1024,
            String::from_utf8_lossy(&mode),
            name
        ));
    }
    out.push_str("---------------- ------- ------- ------- ------- -------\n");
    out.push_str(&format!(
        "total kB         {:>7} {:>7} {:>7} {:>7} {:>7}\n",
        sum.size / 1024,
        sum.rss / 1024,
        sum.pss / 1024,
        sum.dirty() / 1024,
        sum.swap / 1024
    ));
    out
}

/// The changes between two reads, and the repeated mappings that grew.
pub fn diff(header: &str, changes: &[GroupChange], after: &[Group]) -> String {
    let mut out = format!("{header}\n");
    if changes.is_empty() {
        out.push_str("no group appeared, vanished or changed size\n");
        return out;
    }
    let mut table = Table::new(&[
        ("CHANGE", false),
        ("MAPS", true),
        ("ΔMAPS", true),
        ("SIZE", true),
        ("ΔSIZE", true),
        ("RSS", true),
        ("ΔRSS", true),
        ("BACKED BY", false),
    ]);
    for c in changes {
        table.row(vec![
            c.change.to_string(),
            c.mappings_after.to_string(),
            format!("{:+}", c.mappings_after as i64 - c.mappings_before as i64),
            bytes_short(c.size_after),
            bytes_delta_short(delta(c.size_after, c.size_before)),
            bytes_short(c.rss_after),
            bytes_delta_short(delta(c.rss_after, c.rss_before)),
            c.label.clone(),
        ]);
    }
    out.push_str(&table.render());
    for g in after.iter().filter(|g| g.is_repeated()) {
        if changes
            .iter()
            .any(|c| c.backing == g.backing && c.mappings_after > c.mappings_before)
        {
            out.push_str(&format!("  ! {} (and growing)\n", g.repeat_message()));
        }
    }
    out
}
