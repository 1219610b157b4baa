use super::*;

#[test]
fn literal_escapes() {
    assert_eq!(py_literal("a'b\\c\nd"), r"'a\'b\\c\nd'");
    assert_eq!(py_literal("\x00\x7f"), r"'\x00\x7f'");
}

#[test]
fn rendered_bootstrap_is_one_ascii_line() {
    let code = render_bootstrap("/tmp/memsleuth-abc/s", &"ab".repeat(32), 1234);
    assert!(code.is_ascii());
    assert_eq!(code.trim_end().lines().count(), 1);
    assert!(code.starts_with("exec(compile('"));
    assert!(!code.contains("__MEMSLEUTH_"));
    assert!(code.contains("TOOL_UID = 1234\\n"));
    assert!(code.contains(r"PATH = \'/tmp/memsleuth-abc/s\'"));
    assert!(!code.contains('\0'));
    // Comments are stripped, the code is kept.
    assert!(!code.contains("# memsleuth bootstrap"));
    assert!(code.contains("start_new_thread"));
}

#[test]
fn sources_are_ascii() {
    assert!(BOOTSTRAP_TEMPLATE.is_ascii());
    let source = agent_source();
    assert!(source.is_ascii());
    assert!(source.len() < 256 * 1024);
}

#[test]
fn placeholder_in_value_is_not_resubstituted() {
    let code = render_bootstrap("/x/'__MEMSLEUTH_TOKEN__'", "tok", 0);
    assert!(code.contains("__MEMSLEUTH_TOKEN__"));
    assert!(!code.contains("tok\\'__"));
}
