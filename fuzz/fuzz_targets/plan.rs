//! A plan file, JSON or YAML (the first byte picks the extension, which picks the
//! parser), then everything the commands do with it on the tiny llama: the fingerprint
//! check, validation, per-tensor choices, fallbacks, activation widths and size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qevo::search::output::read_plan;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = if pick % 2 == 0 {
        "plan.json"
    } else {
        "plan.yaml"
    };
    let p = qevo_fuzz::put(name, rest);
    let Ok(read) = read_plan(&p) else {
        return;
    };
    let model = qevo_fuzz::tiny_llama();
    let Ok((plan, _warning)) = read.for_model(&p, model, true) else {
        return;
    };
    if plan.validate(model).is_ok() {
        let _ = plan.per_tensor(model);
        let _ = plan.resolved(model);
        let _ = plan.fallbacks(model);
        let _ = plan.act_bits(model);
        let _ = plan.size_bytes(model);
        let _ = plan.bits_per_weight(model);
    }
});
