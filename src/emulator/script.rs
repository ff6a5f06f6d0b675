//! The scripted model's knobs and their short string syntax.
//!
//! A script is a comma-separated list of `key=value` pairs, e.g.
//! `"tools=3,parallel=1,args=200,answer=400,reasoning=1"`. Keys:
//! - `tools`: tool calls the task takes after each user message (default 2);
//! - `parallel`: calls emitted per turn while calls remain (default 1);
//! - `args`: approximate bytes of each call's `arguments` JSON string (default 120);
//! - `answer`: approximate bytes of the final assistant message (default 200);
//! - `reasoning`: `1` to emit a reasoning item before the output (default 0);
//! - `delta`: bytes per `*.delta` event (default 64).
//!
//! Missing keys keep their defaults; unknown keys and bad numbers are errors.

use std::fmt;
use std::str::FromStr;

/// How the scripted model behaves; see the module docs for the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    /// Tool calls per task (per user message).
    pub tools: u32,
    /// Calls per turn while calls remain.
    pub parallel: u32,
    /// Approximate size of each call's arguments, in bytes.
    pub args: usize,
    /// Approximate size of the final answer, in bytes.
    pub answer: usize,
    /// Whether a reasoning item precedes the output.
    pub reasoning: bool,
    /// Bytes per delta event.
    pub delta: usize,
}

impl Default for Script {
    fn default() -> Self {
        Script { tools: 2, parallel: 1, args: 120, answer: 200, reasoning: false, delta: 64 }
    }
}

/// A script string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad emulator script `{input}`: {reason}")]
pub struct ScriptError {
    /// The offending input.
    pub input: String,
    /// What was wrong with it.
    pub reason: String,
}

impl FromStr for Script {
    type Err = ScriptError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut script = Script::default();
        let err = |reason: String| ScriptError { input: s.to_owned(), reason };
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| err(format!("`{pair}` is not key=value")))?;
            let number: u64 = value.trim().parse().map_err(|_| err(format!("`{value}` is not a number")))?;
            let small = |n: u64| u32::try_from(n).map_err(|_| err(format!("`{value}` is too large")));
            match key.trim() {
                "tools" => script.tools = small(number)?,
                "parallel" => script.parallel = small(number)?.max(1),
                "args" => script.args = number as usize,
                "answer" => script.answer = number as usize,
                "reasoning" => script.reasoning = number != 0,
                "delta" => script.delta = (number as usize).max(1),
                other => return Err(err(format!("unknown key `{other}`"))),
            }
        }
        Ok(script)
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tools={},parallel={},args={},answer={},reasoning={},delta={}",
            self.tools,
            self.parallel,
            self.args,
            self.answer,
            u8::from(self.reasoning),
            self.delta
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let s: Script = "tools=3,parallel=2,args=200,answer=400,reasoning=1".parse().expect("parse");
        assert_eq!(s.tools, 3);
        assert_eq!(s.parallel, 2);
        assert!(s.reasoning);
        assert_eq!(s.to_string().parse::<Script>().expect("reparse"), s);
        assert_eq!("".parse::<Script>().expect("empty"), Script::default());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_numbers() {
        assert!("tool=3".parse::<Script>().is_err());
        assert!("tools=x".parse::<Script>().is_err());
        assert!("tools".parse::<Script>().is_err());
    }
}
