//! Discord (issue #15, in progress): so far the interaction signature
//! check the HTTP interactions endpoint will run before parsing anything,
//! and the application commands generated from the command files. The
//! gateway, the endpoint, registering the commands and the outbound adapter
//! are not built yet.

pub mod commands;
pub mod verify;
