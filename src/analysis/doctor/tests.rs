//! Unit tests of the doctor rules on hand-made observations.
