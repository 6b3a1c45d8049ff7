//! Generic multi-objective evolutionary engine: placeholder until the engine lands.
