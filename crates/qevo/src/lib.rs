//! qevo library: placeholder.
pub mod hw;
