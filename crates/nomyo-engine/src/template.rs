//! The model's own chat template (the GGUF's `tokenizer.chat_template`), rendered
//! with minijinja the way Hugging Face `transformers` renders it.
//!
//! llama.cpp's built-in template matcher recognises templates by fingerprint and
//! re-implements them in C++; for SmolLM2 it dropped the template's default system
//! prompt. Rendering the Jinja source itself keeps whatever the model's authors wrote.

use minijinja::{context, Environment, Error, ErrorKind, Value};
use zeroize::Zeroizing;

use crate::params::Message;

/// Used when the GGUF carries no chat template: ChatML, the format most small
/// instruct models (SmolLM2 included) are trained on.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const NAME: &str = "chat";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

/// Why a template could not be compiled or rendered. The detail never holds
/// message content (minijinja errors name the template location, not the data).
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct TemplateError(String);

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source` (Jinja). `bos`/`eos` are the vocabulary's texts for
    /// `bos_token`/`eos_token`, which many templates use.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // transformers renders chat templates with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Python string methods (`.strip()`, `.startswith()`, ...) that templates use.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| TemplateError(e.to_string()))?;
        Ok(Self {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// Renders the conversation followed by the assistant's turn opening
    /// (`add_generation_prompt = true`).
    pub fn render(&self, messages: &[Message]) -> Result<Zeroizing<String>, TemplateError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                context! {
                    role => m.role.as_str(),
                    content => m.content.as_str(),
                }
            })
            .collect();
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError(e.to_string()))?;
        let out = tmpl
            .render(context! {
                messages => msgs,
                add_generation_prompt => true,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            // Only the kind and line: the message of `raise_exception` is the
            // template's own text, but a render error could quote data.
            .map_err(|e| TemplateError(format!("{:?} at line {:?}", e.kind(), e.line())))?;
        Ok(Zeroizing::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tokenizer.chat_template` of SmolLM2-135M-Instruct.Q4_1.gguf, verbatim.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: Zeroizing::new(content.into()),
        }
    }

    #[test]
    fn smollm2_keeps_its_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").expect("compiles");
        let out = t
            .render(&[msg("user", "What is the capital of France?")])
            .expect("renders");
        assert_eq!(
            out.as_str(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn smollm2_uses_a_given_system_prompt_instead() {
        let t = ChatTemplate::new(SMOLLM2, "", "").expect("compiles");
        let out = t
            .render(&[
                msg("system", "Be terse."),
                msg("user", "Hi"),
                msg("assistant", "Hello"),
                msg("user", "Bye"),
            ])
            .expect("renders");
        assert_eq!(
            out.as_str(),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!out.contains("SmolLM"));
    }

    #[test]
    fn python_methods_bos_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}{{ m.content.strip() }}|{% endfor %}",
            "<s>",
            "</s>",
        )
        .expect("compiles");
        assert_eq!(
            t.render(&[msg("user", "  x  ")]).expect("renders").as_str(),
            "<s>x|"
        );
        let e = t
            .render(&[msg("tool", "secret-content")])
            .expect_err("raises");
        assert!(!e.to_string().contains("secret-content"));
    }

    #[test]
    fn chatml_fallback_renders() {
        let t = ChatTemplate::new(CHATML_TEMPLATE, "", "").expect("compiles");
        assert_eq!(
            t.render(&[msg("user", "x")]).expect("renders").as_str(),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn broken_template_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
