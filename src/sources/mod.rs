//! Where posts come from besides the HTTP API.

pub mod demo;
