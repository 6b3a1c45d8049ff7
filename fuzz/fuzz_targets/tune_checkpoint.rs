//! A tune checkpoint (`checkpoint.safetensors`): its safetensors header and JSON
//! metadata parsed, every variable's values, Adam moments and best values read with the
//! shapes the file declares, and its numbers checked as a resume checks them (finite,
//! the history backing the step, counters within the steps taken).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = qevo_fuzz::put("checkpoint.safetensors", data);
    let _ = qevo::tune::inspect_checkpoint(&p);
});
