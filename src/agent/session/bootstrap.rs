//! What is sent to the target: the bootstrap (rendered into the single
//! statement the injector runs) and the agent source.

/// The bootstrap template (see the file for its rules).
pub const BOOTSTRAP_TEMPLATE: &str = include_str!("../bootstrap.py");
/// The agent's core: protocol loop, exec/eval/shell ops, cleanup.
pub const AGENT_CORE: &str = include_str!("../agent.py");

/// Extra ops, each file registering its handlers in `EXTRA_OPS` (see the
/// end of agent.py). They are not part of the agent's start-up source:
/// compiling ~100 KB of Python in the target would slow every attach. A
/// session loads a plugin the first time one of its ops is asked for (see
/// [`plugin_for_op`]).
pub const AGENT_PLUGINS: &[&str] = &[
    // Before the census: `census_reprs` alone (growth, doctor) loads only this.
    include_str!("../plugins/census_reprs.py"),
    // The census; the viewer's instance sampling needs its own-object walk
    // and the short reprs, so it travels with both.
    concat!(
        include_str!("../plugins/census_own.py"),
        include_str!("../plugins/census_types.py"),
        include_str!("../plugins/census.py"),
        include_str!("../plugins/census_reprs.py"),
        include_str!("../plugins/census_instances.py")
    ),
    include_str!("../plugins/gcstate.py"),
    include_str!("../plugins/refgraph.py"),
    // Retained sizes: the census's walk plus references and roots (it uses
    // refgraph's stack and module helpers).
    concat!(
        include_str!("../plugins/census_own.py"),
        include_str!("../plugins/census_types.py"),
        include_str!("../plugins/census.py"),
        include_str!("../plugins/refgraph.py"),
        include_str!("../plugins/retained.py")
    ),
    include_str!("../plugins/watch.py"),
    include_str!("../plugins/shell.py"),
];

/// The agent source the bootstrap compiles and runs (the core only).
pub fn agent_source() -> String {
    String::from(AGENT_CORE)
}

/// The plugin (index into [`AGENT_PLUGINS`], source) that registers `op`.
pub fn plugin_for_op(op: &str) -> Option<(usize, &'static str)> {
    let needles = [format!("EXTRA_OPS['{op}']"), format!("EXTRA_OPS[\"{op}\"]")];
    AGENT_PLUGINS
        .iter()
        .enumerate()
        .find(|(_, src)| needles.iter().any(|n| src.contains(n.as_str())))
        .map(|(i, src)| (i, *src))
}

/// A Python string literal for `s` that means the same on 2.7 and 3.x
/// (ASCII only: anything else is escaped per UTF-8 byte, which is only
/// right on 2.7, so callers pass ASCII; all our paths and tokens are).
pub fn py_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

/// The bootstrap with its parameters filled in, wrapped into the single
/// statement the injector runs (see bootstrap.py), with the agent's source
/// beside it.
pub fn render_bootstrap(socket_path: &str, token: &str, tool_uid: u32) -> String {
    render_bootstrap_for(socket_path, token, tool_uid, 0)
}

/// [`render_bootstrap`] that also runs only in the process whose own pid
/// (as it sees it: its innermost pid namespace) is `target_pid`; 0: any.
pub fn render_bootstrap_for(
    socket_path: &str,
    token: &str,
    tool_uid: u32,
    target_pid: u32,
) -> String {
    let subst = [
        ("'__MEMSLEUTH_PATH__'", py_literal(socket_path)),
        ("'__MEMSLEUTH_TOKEN__'", format!("b{}", py_literal(token))),
        ("'__MEMSLEUTH_UID__'", tool_uid.to_string()),
        ("'__MEMSLEUTH_PID__'", target_pid.to_string()),
    ];
    let mut inner = String::with_capacity(BOOTSTRAP_TEMPLATE.len());
    for line in BOOTSTRAP_TEMPLATE.lines() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // One pass per line, so a value can never be re-substituted.
        let mut rest = line;
        'scan: while !rest.is_empty() {
            for (ph, val) in &subst {
                if rest.starts_with(ph) {
                    inner.push_str(val);
                    rest = &rest[ph.len()..];
                    continue 'scan;
                }
            }
            let ch = rest.chars().next().unwrap_or(' ');
            inner.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        inner.push('\n');
    }
    format!(
        "exec(compile({}, '<memsleuth-bootstrap>', 'exec'), {{'__name__': '_memsleuth_bootstrap', 'AGENT': {}}})\n",
        py_literal(&inner),
        py_literal(AGENT_CORE)
    )
}
