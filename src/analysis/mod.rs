//! Pure functions over what was read from a process: no I/O here, so every
//! rule can be unit-tested on recorded fixtures.

pub mod allocator;
pub mod census;
pub mod classify;
pub mod doctor;
pub mod gcstate;
pub mod groups;
pub mod mapdiff;
pub mod mapview;
pub mod refgraph;
pub mod retained;
pub mod tracemalloc;
pub mod watch;
