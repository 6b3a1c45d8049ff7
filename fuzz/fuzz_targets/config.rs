//! config.json to each architecture's config: the first byte picks the fixture whose
//! weights and tokenizer sit next to the fuzzed config.json (llama, qwen2, gemma3, phi3,
//! GPT-2, BERT), and the model is loaded from that directory (the issue-16
//! `num_hidden_layers` = 10^9 abort).
#![no_main]

use libfuzzer_sys::fuzz_target;

const FIXTURES: [&str; 6] = [
    "tiny_llama",
    "tiny_qwen2",
    "tiny_gemma3",
    "tiny_phi3",
    "tiny_gpt2",
    "tiny_bert",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = FIXTURES[pick as usize % FIXTURES.len()];
    let st = format!("{name}/model.safetensors");
    let tk = format!("{name}/tokenizer.json");
    let dir = qevo_fuzz::model_dir(name, &[(&st, "model.safetensors"), (&tk, "tokenizer.json")]);
    std::fs::write(dir.join("config.json"), rest).expect("scratch write");
    let _ = qevo::Model::load(&dir);
});
