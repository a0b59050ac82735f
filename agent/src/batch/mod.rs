//! The line's batch twin in the agent: batch commands over MQTT (`command`) with their
//! duplicate window (`requests`). The decisions are pure; the line pipeline commits them
//! and only then applies them and answers.

pub mod command;
pub mod requests;
