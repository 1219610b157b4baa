//! Turning results into text for people and JSON for programs.

pub mod allocator;
pub mod census;
pub mod doctor;
pub mod gcstate;
pub mod graph;
pub mod html;
pub mod maps;
pub mod prometheus;
pub mod retained;
pub mod table;
pub mod tracemalloc;
pub mod tui;
pub mod units;
pub mod why;
