//! qevo library: placeholder.
