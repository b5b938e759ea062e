//! Discord (issue #15, in progress): so far the interaction signature
//! check the HTTP interactions endpoint will run before parsing anything.
//! The gateway, the endpoint, commands registration and the outbound
//! adapter are not built yet.

pub mod verify;
