//! Developer tool: the read-only census of a live pid, compared with an
//! agent census JSON (`memsleuth types PID --json --limit 0 > FILE`).
//! `cargo run --example heap_census -- PID [AGENT.json]`

use std::collections::BTreeMap;

use memsleuth::heap::space::LiveLazy;
use memsleuth::heap::{CensusOptions, census, locate};
use memsleuth::process::Process;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let pid: u32 = args[1].parse()?;
    let proc = Process::open(pid)?;
    let maps = proc.maps()?;
    let py =
        memsleuth::python::detect(&proc, &maps)?.ok_or_else(|| anyhow::anyhow!("not python"))?;
    let lazy = LiveLazy { pid };
    let interp = locate(&lazy, &py)?;
    let t0 = std::time::Instant::now();
    let copy = memsleuth::heap::copied::Copied::take(pid)?;
    let copy_s = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let hc = census(&copy, &interp, &CensusOptions::default())?;
    eprintln!("copy {} MB in {copy_s:.3}s", copy.bytes >> 20);
    eprintln!(
        "census: {} objects {} bytes tracked {} perm {} skipped {} in {:.3}s warnings {:?}",
        hc.census.count,
        hc.census.size,
        hc.census.tracked,
        hc.permanent,
        hc.skipped,
        t0.elapsed().as_secs_f64(),
        hc.warnings
    );
    let rows: BTreeMap<&str, (u64, u64, u64)> = hc
        .census
        .rows
        .iter()
        .map(|r| (r.name.as_str(), (r.count, r.size, r.tracked)))
        .collect();
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}
