//! The grouped view of a process's mappings (`maps --json`, the viewer's
//! maps screen): groups, totals and the repeated-mapping flags, computed
//! from an smaps read and the SysV segment list, without any I/O.

use serde::Serialize;

use super::groups::{self, Backing, Group};
use crate::process::maps::{Mapping, MemStats};
use crate::process::sysvipc;

/// Sums over all mappings (also the `totals` of `maps --json`).
#[derive(Debug, Default, serde::Serialize)]
pub struct Totals {
    pub mappings: usize,
    pub size: u64,
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
}

/// The grouped view of one smaps read (the `maps --json` document).
#[derive(Debug, Serialize)]
pub struct GroupedMaps {
    pub schema: u32,
    pub pid: u32,
    pub totals: Totals,
    pub groups: Vec<Group>,
    pub repeated: Vec<Repeated>,
}

/// Sums of the smaps figures over all mappings.
pub fn totals_of(maps: &[Mapping]) -> Totals {
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

#[derive(Debug, Serialize)]
pub struct Repeated {
    pub label: String,
    pub backing: Backing,
    /// How many separate times the object is mapped.
    pub times: usize,
    pub mappings: usize,
    pub rss: u64,
    pub object_size: u64,
    pub message: String,
}

/// Groups a list of smaps mappings; SysV groups get their real segment size.
pub fn grouped_view(pid: u32, maps: &[Mapping], segments: &[sysvipc::Segment]) -> GroupedMaps {
    let mut groups = groups::group(maps);
    groups::attach_sysv_sizes(&mut groups, segments);
    let repeated = groups
        .iter()
        .filter(|g| g.is_repeated())
        .map(|g| Repeated {
            label: g.label.clone(),
            backing: g.backing.clone(),
            times: g.instances,
            mappings: g.mappings,
            rss: g.rss,
            object_size: g.object_size.unwrap_or(g.object_extent),
            message: g.repeat_message(),
        })
        .collect();
    GroupedMaps {
        schema: 1,
        pid,
        totals: totals_of(maps),
        groups,
        repeated,
    }
}
