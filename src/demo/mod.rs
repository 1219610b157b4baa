//! The bundled demo service (`memsleuth demo`): a small Python program with
//! one leak per scenario, embedded in the binary so that a fresh clone can
//! show what doctor does with nothing but `cargo run --release -- demo`.

/// The service's sources, written to a temporary directory at run time.
pub const SERVICE: &str = include_str!("service.py");
pub const SESSIONS: &str = include_str!("sessions.py");

/// What the demo service does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// shmat() of the same SysV segment on every request, never shmdt().
    SysvShm,
    /// Every login kept in a module-level dict.
    UnboundedCache,
    /// A helper thread per request that never ends.
    Threads,
    /// malloc() through ctypes on every request, never free().
    NativeHeap,
    /// No leak: churn and a bounded cache (doctor should say so).
    Healthy,
}

impl Scenario {
    /// The name the service's --scenario takes.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SysvShm => "sysv-shm",
            Scenario::UnboundedCache => "unbounded-cache",
            Scenario::Threads => "threads",
            Scenario::NativeHeap => "native-heap",
            Scenario::Healthy => "healthy",
        }
    }
}
