//! A plan file's rounding record (`rounding`: damp, seq_len, tokens): the plan read,
//! the record checked against the tiny llama (vocabulary, whole windows) and, when it
//! passes, the rounding inputs built from it as export and tune build them (the input
//! moments on the recorded tokens).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qevo::search::output::read_plan;

fuzz_target!(|data: &[u8]| {
    let p = qevo_fuzz::put("plan.json", data);
    let Ok(read) = read_plan(&p) else {
        return;
    };
    let scored = read.scored_with();
    let model = qevo_fuzz::tiny_llama();
    if read.for_model(&p, model, true).is_err() {
        return;
    }
    // Bounds keep one execution short; they are the harness's, not the format's.
    if scored.rounding.as_ref().is_some_and(|r| r.tokens.len() > 4096) {
        return;
    }
    let _ = qevo::quant::RoundingInputs::for_model(model, None, scored.rounding.as_ref());
});
