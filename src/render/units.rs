//! Human-readable sizes, rates and durations: they live in [`crate::units`]
//! (below `analysis`, which formats its sentences with them).

pub use crate::units::*;
