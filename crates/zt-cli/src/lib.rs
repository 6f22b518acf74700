//! The `zt` command line: settings shared by every subcommand and the subcommands
//! themselves. The binary (`main.rs`) only parses arguments and dispatches here.

pub mod chaos_cmd;
pub mod demo_cmd;
pub mod erase_cmd;
pub mod ingest_cmd;
pub mod replay_cmd;
pub mod settings;
pub mod topics_cmd;

pub use settings::Settings;
