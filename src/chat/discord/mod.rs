//! Discord (issue #15, in progress): so far the interaction signature
//! check the HTTP interactions endpoint will run before parsing anything,
//! the application commands generated from the command files, and reading
//! an interaction into a core event. The gateway, the endpoint, approval
//! buttons, registering the commands and the outbound adapter are not
//! built yet.

pub mod commands;
pub mod inbound;
pub mod verify;
