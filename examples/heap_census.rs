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
    // INSPECT=ADDR: that object's type and decoded referents.
    if let Some(a) = std::env::var_os("INSPECT") {
        let a: u64 = a.to_str().unwrap_or("0").parse()?;
        let mem = memsleuth::heap::mem::Mem::new(&copy);
        let mut types = memsleuth::heap::types::Types::new();
        let ti = mem.u64(a + 8).and_then(|t| types.get(&mem, &interp, t));
        if let Some(ti) = ti {
            let t = types.info(ti).clone();
            eprintln!("{t:?}");
            memsleuth::heap::referents::decode(&mem, &interp, &t, a, &mut |p, s| {
                eprintln!("  ref {p:#x} scanned {s}");
            });
        }
        memsleuth::heap::referents::for_each(&mem, &interp, &mut types, a, &mut |p| {
            eprintln!("  valid {p:#x}");
        });
    }
    // DUMP=FILE: every object's row and address (ints and floats keyed by
    // value: their rows only), to diff with an in-process closure.
    let dump = std::env::var_os("DUMP");
    let opts = CensusOptions {
        keep_ids: dump.is_some(),
        ..CensusOptions::default()
    };
    let hc = census(&copy, &interp, &opts)?;
    if let (Some(path), Some(ids)) = (dump, hc.census.ids.as_ref()) {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (name, v) in ids {
            for id in v {
                writeln!(f, "{id} {name}")?;
            }
        }
    }
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
