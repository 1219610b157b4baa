//! Running code inside a live CPython process, safely: PEP 768 on 3.14+,
//! otherwise ptrace at safe points only (a thread parked in a safe syscall
//! without the GIL, or a pending call that runs at the interpreter's next
//! safe point). Never gdb, never a call on a thread that may hold a lock.
pub mod attach;
pub mod launch;
pub mod pep768;
pub mod preflight;
pub mod ptrace;
pub mod ptrace_path;
pub mod remote;
pub mod threads;
pub mod trace;
