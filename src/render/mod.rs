//! Turning results into text for people and JSON for programs.

pub mod maps;
pub mod table;
pub mod units;
