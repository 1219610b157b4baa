//! The self-contained HTML report.
use crate::analysis::doctor::report::Report;

pub fn report(r: &Report) -> String {
    format!(
        "<!doctype html><title>memsleuth</title><pre>{}</pre>",
        crate::render::doctor::text(r)
    )
}
