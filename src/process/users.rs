//! uid → user name, from /etc/passwd (no NSS: a static binary has none, and a
//! missing name is not worth an error).

use std::collections::HashMap;
use std::sync::OnceLock;

fn table() -> &'static HashMap<u32, String> {
    static TABLE: OnceLock<HashMap<u32, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        parse_passwd(&text)
    })
}

fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            map.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    map
}

/// The user's name, or the uid as a string when it has none.
pub fn user_name(uid: u32) -> String {
    table()
        .get(&uid)
        .cloned()
        .unwrap_or_else(|| uid.to_string())
}

/// "uid 1000 (alice)", for error messages.
pub fn describe_uid(uid: u32) -> String {
    match table().get(&uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The effective uid of this process.
pub fn our_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_lines_and_skips_garbage() {
        let map = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nbroken\nnobody:x:65534:65534::/:/bin/false\n",
        );
        assert_eq!(map.get(&0).map(String::as_str), Some("root"));
        assert_eq!(map.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(map.len(), 2);
    }
}
