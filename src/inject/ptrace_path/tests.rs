use super::pending::is_call_before;
use super::symbols::{SAFE_WRAPPERS, find_libc, is_libc_name};
use super::*;

#[test]
fn recognises_calls_before_return_addresses() {
    let before = |tail: &[u8]| {
        let mut b = [0x90u8; 7];
        b[7 - tail.len()..].copy_from_slice(tail);
        is_call_before(&b)
    };
    assert!(before(&[0xe8, 1, 2, 3, 4])); // call rel32
    assert!(before(&[0xff, 0xd0])); // call *%rax
    assert!(before(&[0x41, 0xff, 0xd4])); // call *%r12
    assert!(before(&[0xff, 0x50, 0x08])); // call *0x8(%rax)
    assert!(before(&[0xff, 0x54, 0x24, 0x08])); // call *0x8(%rsp)
    assert!(before(&[0xff, 0x15, 1, 2, 3, 4])); // call *rip+disp32
    assert!(before(&[0xff, 0x90, 1, 2, 3, 4])); // call *disp32(%rax)
    assert!(before(&[0xff, 0x94, 0x24, 1, 2, 3, 4])); // call *disp32(%rsp)
    assert!(!before(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00]));
    assert!(!before(&[0xff, 0xe0])); // jmp *%rax
    assert!(!before(&[0x48, 0x89, 0xc7])); // mov
}

#[test]
fn page_lengths() {
    assert_eq!(page_len(1), 4096);
    assert_eq!(page_len(4096), 4096);
    assert_eq!(page_len(4097), 8192);
}

#[test]
fn libc_names() {
    for n in [
        "libc.so.6",
        "libc-2.31.so",
        "ld-musl-x86_64.so.1",
        "libc.musl-x86_64.so.1",
    ] {
        assert!(is_libc_name(n), "{n}");
    }
    for n in ["libcrypto.so.3", "libc.so", "libcap.so.2", "libc++.so.1"] {
        assert!(!is_libc_name(n), "{n}");
    }
}

#[test]
fn finds_our_own_libc() {
    let me = Process::open(std::process::id()).unwrap();
    let maps = me.maps().unwrap();
    let libc = find_libc(&me, &maps).unwrap();
    assert_eq!(libc.mmap, libc::mmap as *const () as usize as u64);
    assert_eq!(libc.munmap, libc::munmap as *const () as usize as u64);
    assert!(libc.image.0 <= libc.mmap && libc.mmap < libc.image.1);
    let nanosleep = libc::nanosleep as *const () as usize as u64;
    assert!(matches!(libc.function_at(nanosleep + 1), Some(n) if SAFE_WRAPPERS.contains(&n)));
}
