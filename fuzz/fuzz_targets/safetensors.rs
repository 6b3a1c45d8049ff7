//! A Hugging Face directory's weights: the first byte chooses between a fuzzed
//! `model.safetensors` (header and data) and a fuzzed `model.safetensors.index.json`
//! naming shards; the tiny llama fixture provides config.json, tokenizer.json and, for
//! the index, the shard `model-00001-of-00001.safetensors`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let common = [
        ("tiny_llama/config.json", "config.json"),
        ("tiny_llama/tokenizer.json", "tokenizer.json"),
    ];
    let dir = if mode % 2 == 0 {
        let d = qevo_fuzz::model_dir("single", &common);
        std::fs::write(d.join("model.safetensors"), rest).expect("scratch write");
        d
    } else {
        let mut files = common.to_vec();
        files.push((
            "tiny_llama/model.safetensors",
            "model-00001-of-00001.safetensors",
        ));
        let d = qevo_fuzz::model_dir("sharded", &files);
        std::fs::write(d.join("model.safetensors.index.json"), rest).expect("scratch write");
        d
    };
    let _ = qevo::Model::load(&dir);
});
