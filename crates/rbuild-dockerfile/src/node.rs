//! BuildKit's untyped AST node (`parser.Node`) and its S-expression dump (`Node.Dump()`).

use serde::Serialize;

use crate::gostr::{go_lower, go_quote, go_quote_list};
use crate::heredoc::Heredoc;

/// One argument of a [`Node`]: a string, or a nested instruction (the trigger of ONBUILD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NodeArg {
    /// A plain value.
    Value(String),
    /// A sub-instruction.
    Sub(Box<Node>),
}

/// One instruction as BuildKit's parser sees it before typing: the lower-case keyword, the
/// `--flags`, and the arguments as the keyword's line parser split them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword, lower-cased (`run`).
    pub value: String,
    /// The `--name=value` flags before the arguments, quotes and `\` escapes removed.
    pub flags: Vec<String>,
    /// The arguments.
    pub args: Vec<NodeArg>,
    /// True when the arguments were a JSON array (exec form).
    pub json: bool,
    /// The line as read: continuations joined, comments dropped, not trimmed.
    pub original: String,
    /// First source line (1-based).
    pub start_line: usize,
    /// Last source line, heredoc bodies included.
    pub end_line: usize,
    /// Heredoc bodies that follow the line.
    pub heredocs: Vec<Heredoc>,
}

impl Node {
    /// BuildKit's `Node.Dump()`: `copy ["--from=x"] "src" "dst"` (without the parentheses).
    pub fn dump(&self) -> String {
        let mut s = go_lower(&self.value);
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&go_quote_list(&self.flags));
        }
        for a in &self.args {
            s.push(' ');
            match a {
                NodeArg::Value(v) => s.push_str(&go_quote(v)),
                NodeArg::Sub(n) => {
                    s.push('(');
                    s.push_str(&n.dump());
                    s.push(')');
                }
            }
        }
        s.trim().to_string()
    }

    /// The string arguments, a sub-instruction contributing its keyword and arguments
    /// (BuildKit `nodeArgs`).
    pub fn arg_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.args {
            match a {
                NodeArg::Value(v) => out.push(v.clone()),
                NodeArg::Sub(n) => {
                    out.push(n.value.clone());
                    out.extend(n.arg_strings());
                }
            }
        }
        out
    }

    pub(crate) fn can_contain_heredoc(&self) -> bool {
        let mut node = self;
        if node.value == "onbuild" {
            if let Some(NodeArg::Sub(child)) = node.args.first() {
                node = child;
            }
        }
        matches!(node.value.as_str(), "run" | "copy" | "add") && !node.json
    }
}
