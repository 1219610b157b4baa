//! Snapshot tests of `maps` rendering on a recorded smaps (a SysV segment
//! attached 5 times by Debian's python3.11; see tests/fixtures/maps/README).

use memsleuth::analysis::groups;
use memsleuth::analysis::mapview::grouped_view;
use memsleuth::process::{maps, sysvipc};
use memsleuth::render::maps as render;

fn fixture() -> (Vec<maps::Mapping>, Vec<sysvipc::Segment>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/maps");
    let smaps = std::fs::read(dir.join("sysv_reattach.smaps")).unwrap();
    let shm = std::fs::read(dir.join("sysv_reattach.sysvipc")).unwrap();
    (maps::parse_smaps(&smaps), sysvipc::parse(&shm))
}

#[test]
fn grouped_view_of_a_reattached_segment() {
    let (maps, segs) = fixture();
    let view = grouped_view(15004, &maps, &segs);
    let totals = memsleuth::analysis::mapview::Totals {
        mappings: view.totals.mappings,
        size: view.totals.size,
        rss: view.totals.rss,
        pss: view.totals.pss,
        swap: view.totals.swap,
    };
    insta::assert_snapshot!(render::grouped(
        "15004  python3.11 sysv_shm_reattach.py",
        &view.groups,
        &totals,
        false
    ));
    assert_eq!(view.repeated.len(), 1);
    assert_eq!(view.repeated[0].times, 5);
    assert_eq!(view.repeated[0].object_size, 65536);
}

#[test]
fn raw_view_matches_pmap_layout() {
    let (maps, _) = fixture();
    let kinds = groups::classify(&maps);
    insta::assert_snapshot!(render::raw(
        "15004:   python3.11 sysv_shm_reattach.py",
        &maps,
        &kinds
    ));
}
