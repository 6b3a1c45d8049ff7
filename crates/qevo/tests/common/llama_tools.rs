//! Finds llama.cpp's command-line tools, built by scripts/build_llama_tools.sh into
//! `$QEVO_LLAMA_TOOLS/bin` (default `~/.cache/qevo/llama-tools/bin`). Tests that compare with
//! llama.cpp call `llama_tool` and skip, with a printed reason, when it returns None.

use std::path::PathBuf;

/// The directory the tools are installed in (whether or not they are there).
pub fn llama_tools_dir() -> PathBuf {
    let root = match std::env::var_os("QEVO_LLAMA_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/qevo/llama-tools"),
    };
    root.join("bin")
}

/// The path of one tool (`llama-tokenize`, `llama-perplexity`, `llama-quantize`,
/// `llama-imatrix`, `llama-gguf-split`), or None with a skip message naming `test`.
pub fn llama_tool(name: &str, test: &str) -> Option<PathBuf> {
    let path = llama_tools_dir().join(name);
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "SKIP {test}: {} not found (run scripts/build_llama_tools.sh, or set QEVO_LLAMA_TOOLS)",
            path.display()
        );
        None
    }
}
