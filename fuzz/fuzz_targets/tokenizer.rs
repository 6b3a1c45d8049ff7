//! The tokenizer.json loader (Hugging Face `tokenizers`, padding and truncation
//! switched off), then one encoding with and without special tokens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qevo::model::tokenizer::load_tokenizer_json;

fuzz_target!(|data: &[u8]| {
    let p = qevo_fuzz::put("tokenizer.json", data);
    if let Ok(tk) = load_tokenizer_json(&p) {
        let _ = tk.encode("Hello world, 123 é\n\tend", true);
        let _ = tk.encode("", false);
        let _ = tk.vocab_size();
    }
});
