//! What the engine's examples share: argument parsing and the benchmark prompt.

/// The benchmark prompt's paragraph, repeated to the requested length.
const PARAGRAPH: &str =
    "The lighthouse keeper climbed the stairs every evening to light the lamp, \
    watching the ships pass the rocky coast while the wind carried the smell of salt and rain. ";

/// `--name N` from `args`, or `default`.
pub fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The user message of every benchmark request: about `words` words of
/// story, then "Continue this story." (bench/engine_vs_llamacpp.sh sends
/// llama-server the same text).
pub fn story_prompt(words: usize) -> String {
    let paragraph_words = PARAGRAPH.split_whitespace().count();
    let prompt = PARAGRAPH.repeat(words.div_ceil(paragraph_words).max(1));
    format!("{prompt}\nContinue this story.")
}
