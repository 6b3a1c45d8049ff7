//! The hardware-profile TOML, then the cost of the tiny llama's f32 plan on it and the
//! constraint check, as `qevo cost` computes them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qevo::hw::{check_constraints, cost, load_profile};

fuzz_target!(|data: &[u8]| {
    let p = qevo_fuzz::put("profile.toml", data);
    let Ok(profile) = load_profile(&p) else {
        return;
    };
    let model = qevo_fuzz::tiny_llama();
    let counts = qevo::plan::model_counts(model, &qevo::plan::fp_choices(model));
    if let Ok(c) = cost(&counts, &profile, &profile.workload) {
        let _ = check_constraints(&c, &profile);
    }
});
