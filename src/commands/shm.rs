//! `memsleuth shm`: SysV segments (ipcs -m) joined with who has them mapped.
//!
//! nattch is global; the per-process attach counts come from each readable
//! process's maps, where a segment's inode is its shmid.

use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

use super::{CmdResult, Out};
use crate::analysis::groups::{Backing, classify};
use crate::cli::ShmArgs;
use crate::process::sysvipc::{self, Segment};
use crate::process::{Process, all_pids, users};
use crate::render::table::Table;
use crate::render::units::bytes_short;

#[derive(Debug, Serialize)]
pub struct Attachment {
    pub pid: u32,
    pub comm: String,
    pub mappings: u64,
    pub rss: u64,
}

#[derive(Debug, Serialize)]
pub struct SegmentView {
    #[serde(flatten)]
    pub segment: Segment,
    pub shmid_hex: String,
    pub owner: String,
    pub removed: bool,
    pub attached_by: Vec<Attachment>,
    /// Attachments counted in nattch that memsleuth could not see
    /// (processes it may not read, or in another pid namespace).
    pub unseen_attachments: u64,
}

#[derive(Debug, Serialize)]
struct ShmReport {
    schema: u32,
    segments: Vec<SegmentView>,
    unreadable_processes: usize,
    warnings: Vec<String>,
}

/// How many attachments of one segment by one process make us say so.
const MANY: u64 = 2;

pub fn run(args: &ShmArgs) -> CmdResult {
    let segments = sysvipc::read();
    let (mut attach, unreadable) = scan_attachments();
    let mut views = Vec::new();
    let mut warnings = Vec::new();
    for seg in segments {
        let attached_by: Vec<Attachment> = attach.remove(&seg.shmid).unwrap_or_default();
        let seen: u64 = attached_by.iter().map(|a| a.mappings).sum();
        for a in &attached_by {
            if a.mappings >= MANY {
                warnings.push(format!(
                    "process {} ({}) has shmid 0x{:x} attached {} times: {} of RSS for one {} segment (shmat without shmdt?)",
                    a.pid,
                    a.comm,
                    seg.shmid,
                    a.mappings,
                    bytes_short(a.rss),
                    bytes_short(seg.size)
                ));
            }
        }
        if seg.nattch == 0 && seg.rss > 0 {
            warnings.push(format!(
                "shmid 0x{:x} is attached nowhere but holds {} of memory that no process is charged for; remove it with `ipcrm -m {}` if it is stale",
                seg.shmid,
                bytes_short(seg.rss),
                seg.shmid
            ));
        }
        views.push(SegmentView {
            shmid_hex: format!("0x{:x}", seg.shmid),
            owner: users::user_name(seg.uid),
            removed: seg.removed(),
            unseen_attachments: seg.nattch.saturating_sub(seen),
            attached_by,
            segment: seg,
        });
    }
    let mut out = Out::new();
    if args.json {
        out.json(
            &ShmReport {
                schema: 1,
                segments: views,
                unreadable_processes: unreadable,
                warnings,
            },
            false,
        )?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        out.line("no SysV shared-memory segments in this IPC namespace")?;
    } else {
        let mut table = Table::new(&[
            ("KEY", false),
            ("SHMID", false),
            ("OWNER", false),
            ("PERMS", false),
            ("SIZE", true),
            ("RSS", true),
            ("NATTCH", true),
            ("CPID", true),
            ("LPID", true),
            ("ATTACHED BY", false),
        ]);
        for v in &views {
            let mut by: Vec<String> = v
                .attached_by
                .iter()
                .map(|a| format!("{} {}×{}", a.pid, a.comm, a.mappings))
                .collect();
            if v.unseen_attachments > 0 {
                by.push(format!("+{} unseen", v.unseen_attachments));
            }
            let perms = format!(
                "{:o}{}",
                v.segment.perms & 0o777,
                if v.removed { " dest" } else { "" }
            );
            table.row(vec![
                format!("0x{:08x}", v.segment.key),
                v.shmid_hex.clone(),
                v.owner.clone(),
                perms,
                bytes_short(v.segment.size),
                bytes_short(v.segment.rss),
                v.segment.nattch.to_string(),
                v.segment.cpid.to_string(),
                v.segment.lpid.to_string(),
                by.join(", "),
            ]);
        }
        out.text(&table.render())?;
    }
    for w in &warnings {
        out.line(&format!("! {w}"))?;
    }
    if unreadable > 0 && views.iter().any(|v| v.unseen_attachments > 0) {
        out.line(&format!(
            "note: {unreadable} processes could not be read; run as root to see every attachment"
        ))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// shmid → attachments per process, and how many processes we could not read.
fn scan_attachments() -> (BTreeMap<u64, Vec<Attachment>>, usize) {
    let mut by_shmid: BTreeMap<u64, Vec<Attachment>> = BTreeMap::new();
    let mut unreadable = 0;
    let me = std::process::id();
    for pid in all_pids() {
        if pid == me {
            continue;
        }
        let proc = Process::unchecked(pid);
        let maps = match proc.read("maps") {
            Ok(b) => crate::process::maps::parse_maps(&b),
            Err(e) if e.is_gone() => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        if !maps.iter().any(|m| m.path.starts_with("/SYSV")) {
            continue;
        }
        // Only processes with segments pay for an smaps read (for RSS).
        let maps = proc.smaps().unwrap_or(maps);
        let comm = proc
            .read_string("comm")
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let mut per: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (m, kind) in maps.iter().zip(classify(&maps)) {
            if let Backing::Sysv { shmid, .. } = kind {
                let e = per.entry(shmid).or_default();
                e.0 += 1;
                e.1 += m.stats.rss;
            }
        }
        for (shmid, (mappings, rss)) in per {
            by_shmid.entry(shmid).or_default().push(Attachment {
                pid,
                comm: comm.clone(),
                mappings,
                rss,
            });
        }
    }
    (by_shmid, unreadable)
}
