//! `memsleuth maps`: the mappings of a process grouped by what backs them.

use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

use super::{CmdResult, Out};
use crate::analysis::groups;
use crate::analysis::mapdiff::{self, GroupChange};
pub use crate::analysis::mapview::{GroupedMaps, Totals, grouped_view};
use crate::cli::MapsArgs;
use crate::process::maps::Mapping;
use crate::process::{Process, sysvipc};
use crate::render::maps as render;
use crate::render::units::{bytes_delta_short, bytes_short, delta};

pub fn run(args: &MapsArgs) -> CmdResult {
    let proc = super::open(args.pid)?;
    let mut out = Out::new();
    if args.raw {
        raw(&proc, args, &mut out)?;
    } else if let Some(secs) = args.diff {
        diff(&proc, secs, args, &mut out)?;
    } else {
        let view = read_grouped(&proc)?;
        if args.json {
            out.json(&view, false)?;
        } else {
            let header = format!("{}  {}", proc.pid, proc.cmdline());
            out.text(&render::grouped(
                &header,
                &view.groups,
                &view.totals,
                args.all,
            ))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Reads smaps and groups it.
pub fn read_grouped(proc: &Process) -> anyhow::Result<GroupedMaps> {
    let maps = proc.smaps()?;
    let has_sysv = maps.iter().any(|m| m.path.starts_with("/SYSV"));
    let segments = if has_sysv {
        sysvipc::read()
    } else {
        Vec::new()
    };
    Ok(grouped_view(proc.pid, &maps, &segments))
}

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
    let header = format!("{}:   {}", proc.pid, proc.cmdline());
    out.text(&render::raw(&header, &maps, &kinds))?;
    Ok(())
}

fn diff(proc: &Process, secs: f64, args: &MapsArgs, out: &mut Out) -> anyhow::Result<()> {
    let before = read_grouped(proc)?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let after = read_grouped(proc)?;
    let changes = mapdiff::compare(&before.groups, &after.groups);
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
        let doc = Diff {
            schema: 1,
            pid: proc.pid,
            interval_s: secs,
            totals_before: &before.totals,
            totals_after: &after.totals,
            changes: &changes,
        };
        return out.json(&doc, false);
    }
    let (b, a) = (&before.totals, &after.totals);
    let header = format!(
        "{}  over {secs}s: mappings {} → {}, RSS {} → {} ({}), PSS {} → {}",
        proc.pid,
        b.mappings,
        a.mappings,
        bytes_short(b.rss),
        bytes_short(a.rss),
        bytes_delta_short(delta(a.rss, b.rss)),
        bytes_short(b.pss),
        bytes_short(a.pss),
    );
    out.text(&render::diff(&header, &changes, &after.groups))?;
    Ok(())
}
