//! The exec or shell form shared by RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.

use serde::Serialize;

use crate::node::Node;

/// The exec or shell form of RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// JSON array form: run the program directly.
    Exec(Vec<String>),
    /// Shell form: the text is handed to the image's SHELL (empty when nothing was given).
    Shell(String),
}

/// BuildKit `handleJSONArgs`: a JSON array is the exec form, anything else the shell form.
pub(crate) fn command_of(node: &Node, args: Vec<String>) -> Command {
    // BuildKit `handleJSONArgs`: the shell form is the one argument the line parser kept.
    if node.json {
        Command::Exec(args)
    } else {
        Command::Shell(args.join(" "))
    }
}
