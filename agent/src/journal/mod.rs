//! The journal: where records become accepted. See `pdtf_models::journal` for the contract.

mod redb_store;

pub use redb_store::{verify_state_dir, RedbJournal, VerifyReport};
