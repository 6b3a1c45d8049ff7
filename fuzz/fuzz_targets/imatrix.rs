//! An importance-matrix file, GGUF or llama.cpp's legacy binary form, then its
//! fingerprint and its match against the tiny llama's tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qevo::calib::imatrix::Imatrix;

fuzz_target!(|data: &[u8]| {
    let p = qevo_fuzz::put("in.imatrix", data);
    if let Ok(m) = Imatrix::read(&p) {
        let _ = m.fingerprint();
        let _ = m.for_model(qevo_fuzz::tiny_llama());
    }
});
