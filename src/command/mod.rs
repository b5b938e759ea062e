//! Commands as data: the serde shape of `commands/*.toml` (`spec`), loading and
//! checking them (`registry`), and turning text into a typed request (`parse`).
//! No I/O beyond reading the command files at start; parsing is pure.

pub mod parse;
pub mod registry;
pub mod spec;

#[cfg(test)]
mod tests;

pub use parse::{parse, Admin, Class, IncidentOp, Kind, ParseError, ParsedCommand, Read, Request, RunbookOp};
pub use registry::Registry;
pub use spec::{ActionKind, CommandSpec};
