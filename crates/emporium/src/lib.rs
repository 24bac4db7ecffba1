//! The `emporium` binary's library: the command line, the runner that starts services on their
//! ports (every service in one process for `up`, one for `serve`), and the demo shop it seeds.
//! Services are composed here and nowhere else; they never depend on each other.

pub mod cli;
pub mod demo;
pub mod events_cli;
pub mod run;
pub mod services;
pub mod setup;
pub mod traces_page;
