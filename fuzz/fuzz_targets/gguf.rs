//! The GGUF reader: header, metadata, tensor directory, every tensor dequantized, the
//! tokenizer a GGUF describes, and the model built from it (hyperparameters from the
//! metadata, the issue-16 `block_count` = 10^9 abort).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qevo::model::{gguf::Gguf, tokenizer};

fuzz_target!(|data: &[u8]| {
    let p = qevo_fuzz::put("in.gguf", data);
    if let Ok(g) = Gguf::open(&p) {
        for t in &g.tensors {
            let _ = g.dequantize(t);
        }
        if let Ok(tk) = tokenizer::from_gguf(&g) {
            let _ = tk.encode("Hello world, 123 é", true);
        }
    }
    let _ = qevo::Model::load(&p);
});
