//! How single nodes are named in a path: roots, frames, threads, owners
//! of a `__dict__`, identifier keys.

use super::RootKind;
use super::labels::{NodeInfo, RootRecord, TEXT_CAP, clean};

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn last_component(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn frame_text(func: &str, file: &str, line: i64) -> String {
    format!(
        "frame {}() at {}:{line}",
        clean(func, 80),
        clean(basename(file), 120)
    )
}

pub(super) fn thread_text(r: &RootRecord) -> String {
    match (&r.thread, r.ident) {
        (Some(t), _) => format!("thread '{}'", clean(t, 80)),
        (None, Some(i)) => format!("thread {i}"),
        (None, None) => "a thread".to_string(),
    }
}

pub(super) fn short_type(info: &NodeInfo) -> String {
    clean(&info.type_name, TEXT_CAP)
}

/// How a node is shown on its own.
pub(super) fn plain_name(info: Option<&NodeInfo>) -> String {
    let Some(info) = info else {
        return "(gone)".to_string();
    };
    let name = info.name.as_deref().map(|n| clean(n, TEXT_CAP));
    let tn = short_type(info);
    match (info.kind.as_str(), name) {
        ("module", Some(n)) => format!("module {n}"),
        ("class", Some(n)) => format!("class {n}"),
        ("frame", _) => frame_text(
            info.func.as_deref().unwrap_or("?"),
            info.file.as_deref().unwrap_or("?"),
            info.line.unwrap_or(0),
        ),
        ("function", Some(n)) => format!("function {n}"),
        ("method", Some(n)) if info.bound != Some(false) => format!("bound method {n}"),
        ("method", Some(n)) => format!("method {n}"),
        ("generator", Some(n)) => format!("{tn} {n}"),
        ("value", Some(n)) => format!("{tn} {n}"),
        _ => tn,
    }
}

/// The name an owner gives its `__dict__` (`app`, `Bus`, `UserSession`).
pub(super) fn owner_short(info: Option<&NodeInfo>) -> String {
    let Some(info) = info else {
        return "?".to_string();
    };
    match (info.kind.as_str(), &info.name) {
        ("module", Some(n)) => clean(n, TEXT_CAP),
        ("class", Some(n)) => clean(last_component(n), TEXT_CAP),
        _ => clean(last_component(&info.type_name), TEXT_CAP),
    }
}

/// The root's name from the roots list (and node info).
pub(super) fn root_name(
    kind: RootKind,
    rec: Option<&RootRecord>,
    info: Option<&NodeInfo>,
) -> String {
    match kind {
        RootKind::Module => {
            let n = rec
                .and_then(|r| r.name.as_deref())
                .or(info.and_then(|i| i.name.as_deref()))
                .unwrap_or("?");
            format!("module {}", clean(n, TEXT_CAP))
        }
        RootKind::Class => match info.and_then(|i| i.name.as_deref()) {
            Some(n) => format!("class {}", clean(n, TEXT_CAP)),
            None => "class ?".to_string(),
        },
        RootKind::SysModules => "sys.modules".to_string(),
        RootKind::Frame => match rec {
            Some(r) => format!(
                "{} {}",
                thread_text(r),
                frame_text(
                    r.func.as_deref().unwrap_or("?"),
                    r.file.as_deref().unwrap_or("?"),
                    r.line.unwrap_or(0)
                )
            ),
            None => plain_name(info),
        },
        RootKind::NoReferrer => format!("(held from C) {}", plain_name(info)),
    }
}

/// `['name']` (or `[u'name']`) with an identifier inside: the name.
pub(super) fn ident_key(label: &str) -> Option<&str> {
    let inner = label.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.strip_prefix('u').unwrap_or(inner);
    let q = inner.chars().next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let name = inner.strip_prefix(q)?.strip_suffix(q)?;
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_alphabetic() || first == '_') || !chars.all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    Some(name)
}
