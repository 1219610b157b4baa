//! `memsleuth maps`: the mappings of a process grouped by what backs them.

use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use super::{CmdResult, Out};
use crate::analysis::groups::{self, Backing, Group};
use crate::cli::MapsArgs;
use crate::process::maps::{Mapping, MemStats};
use crate::process::{Process, sysvipc};
use crate::render::table::Table;
use crate::render::units::{bytes_delta_short, bytes_short, delta};

const DEFAULT_LIMIT: usize = 30;

pub fn run(args: &MapsArgs) -> CmdResult {
    let proc = super::open(args.pid)?;
    let mut out = Out::new();
    if args.raw {
        raw(&proc, args, &mut out)?;
    } else if let Some(secs) = args.diff {
        diff(&proc, secs, args, &mut out)?;
    } else {
        grouped(&proc, args, &mut out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The grouped view of one smaps read.
#[derive(Debug, Serialize)]
pub struct GroupedMaps {
    pub schema: u32,
    pub pid: u32,
    pub totals: Totals,
    pub groups: Vec<Group>,
    pub repeated: Vec<Repeated>,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub mappings: usize,
    pub size: u64,
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
}

#[derive(Debug, Serialize)]
pub struct Repeated {
    pub label: String,
    pub backing: Backing,
    pub mappings: usize,
    pub rss: u64,
    pub object_size: u64,
    pub message: String,
}

/// Reads smaps and groups it; SysV groups get their real segment size.
pub fn read_grouped(proc: &Process) -> anyhow::Result<GroupedMaps> {
    let maps = proc.smaps()?;
    let mut groups = groups::group(&maps);
    if groups
        .iter()
        .any(|g| matches!(g.backing, Backing::Sysv { .. }))
    {
        groups::attach_sysv_sizes(&mut groups, &sysvipc::read());
    }
    let totals = totals(&maps);
    let repeated = groups
        .iter()
        .filter(|g| g.is_repeated())
        .map(|g| Repeated {
            label: g.label.clone(),
            backing: g.backing.clone(),
            mappings: g.mappings,
            rss: g.rss,
            object_size: g.object_size.unwrap_or(g.object_extent),
            message: g.repeat_message(),
        })
        .collect();
    Ok(GroupedMaps {
        schema: 1,
        pid: proc.pid,
        totals,
        groups,
        repeated,
    })
}

fn totals(maps: &[Mapping]) -> Totals {
    let mut sum = MemStats::default();
    for m in maps {
        sum.add(&m.stats);
    }
    Totals {
        mappings: maps.len(),
        size: sum.size,
        rss: sum.rss,
        pss: sum.pss,
        swap: sum.swap,
    }
}

fn grouped(proc: &Process, args: &MapsArgs, out: &mut Out) -> anyhow::Result<()> {
    let view = read_grouped(proc)?;
    if args.json {
        return out.json(&view, false);
    }
    out.line(&format!("{}  {}", proc.pid, proc.cmdline()))?;
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
    for (i, g) in view.groups.iter().enumerate() {
        if !args.all && i >= DEFAULT_LIMIT && !g.is_repeated() {
            hidden += 1;
            continue;
        }
        let count = if g.units != g.mappings {
            format!("{}×{}", g.units, unit_word(&g.backing))
        } else {
            g.mappings.to_string()
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
    out.text(&table.render())?;
    if hidden > 0 {
        out.line(&format!("… {hidden} smaller groups not shown (use --all)"))?;
    }
    let t = &view.totals;
    out.line(&format!(
        "total: {} mappings, {} mapped, RSS {}, PSS {}, swap {}",
        t.mappings,
        bytes_short(t.size),
        bytes_short(t.rss),
        bytes_short(t.pss),
        bytes_short(t.swap)
    ))?;
    if !view.repeated.is_empty() {
        out.line("")?;
        out.line("Mapped more than once by this process:")?;
        for r in &view.repeated {
            out.line(&format!("  ! {}", r.message))?;
        }
        if view
            .repeated
            .iter()
            .any(|r| matches!(r.backing, Backing::Sysv { .. }))
        {
            out.line("    (a SysV segment attached again with shmat() and never shmdt()'d; see `memsleuth shm`)")?;
        }
    }
    Ok(())
}

fn unit_word(b: &Backing) -> &'static str {
    match b {
        Backing::ThreadStacks => "stack",
        Backing::GlibcArenas => "heap",
        _ => "obj",
    }
}

fn kind_word(b: &Backing) -> &'static str {
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
fn raw(proc: &Process, args: &MapsArgs, out: &mut Out) -> anyhow::Result<()> {
    let maps = proc.smaps()?;
    if args.json {
        #[derive(Serialize)]
        struct Raw<'a> {
            schema: u32,
            pid: u32,
            mappings: &'a [Mapping],
        }
        return out.json(
            &Raw {
                schema: 1,
                pid: proc.pid,
                mappings: &maps,
            },
            false,
        );
    }
    let kinds = groups::classify(&maps);
    out.line(&format!("{}:   {}", proc.pid, proc.cmdline()))?;
    out.line("Address           Kbytes     RSS     PSS   Dirty    Swap Mode  Mapping")?;
    let mut sum = MemStats::default();
    for (m, kind) in maps.iter().zip(&kinds) {
        sum.add(&m.stats);
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
        out.line(&format!(
            "{:016x} {:>7} {:>7} {:>7} {:>7} {:>7} {} {}",
            m.start,
            m.size() / 1024,
            m.stats.rss / 1024,
            m.stats.pss / 1024,
            m.stats.dirty() / 1024,
            m.stats.swap / 1024,
            String::from_utf8_lossy(&mode),
            name
        ))?;
    }
    out.line("---------------- ------- ------- ------- ------- -------")?;
    out.line(&format!(
        "total kB         {:>7} {:>7} {:>7} {:>7} {:>7}",
        sum.size / 1024,
        sum.rss / 1024,
        sum.pss / 1024,
        sum.dirty() / 1024,
        sum.swap / 1024
    ))?;
    Ok(())
}

#[derive(Debug, Serialize)]
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

/// Compares two grouped reads: groups that appeared, vanished, grew or shrank.
pub fn compare(before: &[Group], after: &[Group]) -> Vec<GroupChange> {
    let old: BTreeMap<&Backing, &Group> = before.iter().map(|g| (&g.backing, g)).collect();
    let new: BTreeMap<&Backing, &Group> = after.iter().map(|g| (&g.backing, g)).collect();
    let mut changes = Vec::new();
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
    for (key, a) in &new {
        match old.get(key) {
            None => changes.push(change("appeared", a, None, Some(a))),
            Some(b) => {
                let grew = a.mappings > b.mappings || a.size > b.size || a.rss > b.rss;
                let shrank = a.mappings < b.mappings || a.size < b.size || a.rss < b.rss;
                // RSS moves by a few pages all the time; report a change of
                // mappings or size, or an RSS move of at least 64 KiB.
                let rss_moved = a.rss.abs_diff(b.rss) >= 64 * 1024;
                let shape_moved = a.mappings != b.mappings || a.size != b.size;
                if (grew || shrank) && (shape_moved || rss_moved) {
                    let kind = if delta(a.rss, b.rss) + delta(a.size, b.size) >= 0 {
                        "grew"
                    } else {
                        "shrank"
                    };
                    changes.push(change(kind, a, Some(b), Some(a)));
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

fn diff(proc: &Process, secs: f64, args: &MapsArgs, out: &mut Out) -> anyhow::Result<()> {
    let before = read_grouped(proc)?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let after = read_grouped(proc)?;
    let changes = compare(&before.groups, &after.groups);
    if args.json {
        #[derive(Serialize)]
        struct Diff<'a> {
            schema: u32,
            pid: u32,
            interval_s: f64,
            totals_before: &'a Totals,
            totals_after: &'a Totals,
            changes: &'a [GroupChange],
        }
        return out.json(
            &Diff {
                schema: 1,
                pid: proc.pid,
                interval_s: secs,
                totals_before: &before.totals,
                totals_after: &after.totals,
                changes: &changes,
            },
            false,
        );
    }
    let (b, a) = (&before.totals, &after.totals);
    out.line(&format!(
        "{}  over {secs}s: mappings {} → {}, RSS {} → {} ({}), PSS {} → {}",
        proc.pid,
        b.mappings,
        a.mappings,
        bytes_short(b.rss),
        bytes_short(a.rss),
        bytes_delta_short(delta(a.rss, b.rss)),
        bytes_short(b.pss),
        bytes_short(a.pss),
    ))?;
    if changes.is_empty() {
        out.line("no group appeared, vanished or changed size")?;
        return Ok(());
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
    for c in &changes {
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
    out.text(&table.render())?;
    for r in &after.repeated {
        let grew = changes
            .iter()
            .any(|c| c.backing == r.backing && c.mappings_after > c.mappings_before);
        if grew {
            out.line(&format!("  ! {} (and growing)", r.message))?;
        }
    }
    Ok(())
}
